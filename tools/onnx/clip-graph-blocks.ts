/**
 * ONNX subgraphs shared by both CLIP towers: LayerNorm, linear layers, multi-head self-attention,
 * the QuickGELU MLP and the pre-LN residual block. Activations are [batch, tokens, width].
 */
import { type ClipWeights, weightTensor } from "./clip-weights.js";
import { attr, type GraphBuilder } from "./graph-builder.js";

/** CLIP's LayerNorm epsilon. */
export const LAYER_NORM_EPSILON = 1e-5;

/** A graph under construction plus the weights it draws initializers from. */
export interface TowerGraph {
  readonly graph: GraphBuilder;
  readonly weights: ClipWeights;
}

/** Adds the named weight as an initializer (the ONNX name equals the weight name). */
export function weight(tower: TowerGraph, name: string): string {
  const { data, dims } = weightTensor(tower.weights, name);
  return tower.graph.addFloatInitializer(name, dims, data);
}

export function layerNorm(tower: TowerGraph, x: string, name: string): string {
  return tower.graph.op(
    "LayerNormalization",
    [x, weight(tower, `${name}.gamma`), weight(tower, `${name}.beta`)],
    { axis: attr.int(-1), epsilon: attr.float(LAYER_NORM_EPSILON) },
  );
}

/** x·W + b, or x·W when `withBias` is false. */
export function linear(tower: TowerGraph, x: string, name: string, withBias = true): string {
  const product = tower.graph.op("MatMul", [x, weight(tower, `${name}.weight`)]);
  return withBias ? tower.graph.op("Add", [product, weight(tower, `${name}.bias`)]) : product;
}

/**
 * Multi-head self-attention. `additiveMask` (optional) broadcasts against the scores
 * [batch, heads, tokens, tokens]: 0 where attention is allowed, a large negative value elsewhere.
 */
export function selfAttention(
  tower: TowerGraph,
  x: string,
  prefix: string,
  width: number,
  heads: number,
  additiveMask?: string,
): string {
  const g = tower.graph;
  const headDim = width / heads;
  // Reshape's 0 copies the input's dimension, so batch and tokens stay dynamic.
  const splitHeads = g.constInt64([0, 0, heads, headDim]);
  const q = linear(tower, x, `${prefix}.q`);
  const k = linear(tower, x, `${prefix}.k`);
  const v = linear(tower, x, `${prefix}.v`);
  const qHeads = g.op("Transpose", [g.op("Reshape", [q, splitHeads])], { perm: attr.ints([0, 2, 1, 3]) });
  const kHeadsT = g.op("Transpose", [g.op("Reshape", [k, splitHeads])], { perm: attr.ints([0, 2, 3, 1]) });
  const vHeads = g.op("Transpose", [g.op("Reshape", [v, splitHeads])], { perm: attr.ints([0, 2, 1, 3]) });
  const qScaled = g.op("Mul", [qHeads, g.constFloat([1 / Math.sqrt(headDim)])]);
  let scores = g.op("MatMul", [qScaled, kHeadsT]);
  if (additiveMask !== undefined) scores = g.op("Add", [scores, additiveMask]);
  const probabilities = g.op("Softmax", [scores], { axis: attr.int(-1) });
  const context = g.op("MatMul", [probabilities, vHeads]);
  const merged = g.op("Reshape", [
    g.op("Transpose", [context], { perm: attr.ints([0, 2, 1, 3]) }),
    g.constInt64([0, 0, width]),
  ]);
  return linear(tower, merged, `${prefix}.out`);
}

/** fc1 → QuickGELU (x·σ(1.702x)) → fc2. */
export function quickGeluMlp(tower: TowerGraph, x: string, prefix: string): string {
  const g = tower.graph;
  const hidden = linear(tower, x, `${prefix}.fc1`);
  const gate = g.op("Sigmoid", [g.op("Mul", [hidden, g.constFloat([1.702])])]);
  return linear(tower, g.op("Mul", [hidden, gate]), `${prefix}.fc2`);
}

/** x + attn(ln1(x)), then + mlp(ln2(·)). */
export function transformerBlock(
  tower: TowerGraph,
  x: string,
  prefix: string,
  width: number,
  heads: number,
  additiveMask?: string,
): string {
  const g = tower.graph;
  const attended = selfAttention(tower, layerNorm(tower, x, `${prefix}.ln1`), `${prefix}.attn`, width, heads, additiveMask);
  const afterAttention = g.op("Add", [x, attended]);
  const mlpOut = quickGeluMlp(tower, layerNorm(tower, afterAttention, `${prefix}.ln2`), `${prefix}.mlp`);
  return g.op("Add", [afterAttention, mlpOut]);
}
