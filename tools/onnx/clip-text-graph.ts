/**
 * The text tower of OpenAI CLIP as an ONNX graph:
 * input_ids int64 [batch, sequence] (+ attention_mask when configured) → text_embeds float32
 * [batch, embedDim] (not normalized). sequence may be anything up to contextLength.
 */
import { layerNorm, type TowerGraph, transformerBlock, weight } from "./clip-graph-blocks.js";
import type { ClipWeights } from "./clip-weights.js";
import { attr, GraphBuilder } from "./graph-builder.js";

/**
 * Added to masked attention scores. Finite rather than -Infinity so that a row whose keys are
 * all masked gives a uniform softmax instead of NaN; exp(-1e9) is exactly 0 in float32 anyway.
 */
export const MASKED_SCORE = -1e9;

const ONNX_FLOAT = 1;

/** Upper-triangular [n, n] additive mask: key j > query i is hidden. */
function causalMask(n: number): Float32Array {
  const mask = new Float32Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) mask[i * n + j] = MASKED_SCORE;
  return mask;
}

/**
 * Serialized text model: token embedding, positional embedding sliced to the sequence length,
 * causal pre-LN blocks, ln_final, pooling at the first eosTokenId, projection (no bias).
 */
export function buildTextModel(weights: ClipWeights): Uint8Array {
  const { text, embedDim } = weights.config;
  const g = new GraphBuilder("clip_text", "CLIP text tower with seeded random weights (clipguard tools)");
  const tower: TowerGraph = { graph: g, weights };
  const n = text.contextLength;

  const ids = g.addInput("input_ids", "int64", ["batch", "sequence"]);
  const tokens = g.op("Gather", [weight(tower, "text.token_embed"), ids], { axis: attr.int(0) });
  const sequence = g.op("Shape", [ids], { start: attr.int(1), end: attr.int(2) });
  const positions = g.op("Slice", [weight(tower, "text.pos_embed"), g.constInt64([0]), sequence, g.constInt64([0])]);
  let x = g.op("Add", [tokens, positions]);

  const fullMask = g.addFloatInitializer("text.causal_mask", [n, n], causalMask(n));
  const squareEnds = g.op("Concat", [sequence, sequence], { axis: attr.int(0) });
  let mask = g.op("Slice", [fullMask, g.constInt64([0, 0]), squareEnds, g.constInt64([0, 1])]);
  if (text.withAttentionMask === true) {
    const keep = g.op("Cast", [g.addInput("attention_mask", "int64", ["batch", "sequence"])], { to: attr.int(ONNX_FLOAT) });
    const padding = g.op("Mul", [g.op("Sub", [g.constFloat([1]), keep]), g.constFloat([MASKED_SCORE])]);
    // [batch, sequence] → [batch, 1, 1, sequence]: the same keys are hidden for every head and query.
    const perKey = g.op("Unsqueeze", [padding, g.constInt64([1, 2])]);
    mask = g.op("Add", [mask, perKey]);
  }

  for (let i = 0; i < text.layers; i++) {
    x = transformerBlock(tower, x, `text.blocks.${i}`, text.width, text.heads, mask);
  }
  x = layerNorm(tower, x, "text.ln_final");

  // ArgMax returns the first maximum, i.e. the first EOS (or position 0 when there is none).
  const isEos = g.op("Cast", [g.op("Equal", [ids, g.constInt64([text.eosTokenId], [])])], { to: attr.int(ONNX_FLOAT) });
  const eosIndex = g.op("ArgMax", [isEos], { axis: attr.int(1), keepdims: attr.int(1) });
  const pooled = g.op("GatherND", [x, eosIndex], { batch_dims: attr.int(1) });
  const embeds = g.op("MatMul", [pooled, weight(tower, "text.proj")]);
  g.addOutput("text_embeds", "float32", ["batch", embedDim], embeds);
  return g.toBytes();
}
