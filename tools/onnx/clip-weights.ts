/**
 * Seeded random weights for a CLIP of any size. Layouts (row-major):
 *   linear weights are [in, out] (ready for MatMul: y = x·W + b);
 *   vision.patch_embed is the Conv kernel [width, 3, patch, patch];
 *   embeddings are [rows, width]; LayerNorm gamma/beta are [width].
 * Names, per tower T ∈ {vision, text} and block i:
 *   T.blocks.i.{ln1,ln2}.{gamma,beta}, T.blocks.i.attn.{q,k,v,out}.{weight,bias},
 *   T.blocks.i.mlp.{fc1,fc2}.{weight,bias};
 *   vision.{patch_embed,class_embed,pos_embed,ln_pre.*,ln_post.*,proj};
 *   text.{token_embed,pos_embed,ln_final.*,proj}.
 */
import { type ClipArchConfig, validateClipConfig } from "./clip-config.js";
import { SeededRandom } from "./seeded-random.js";

/** A CLIP's sizes and its named weight tensors. */
export interface ClipWeights {
  readonly config: ClipArchConfig;
  readonly tensors: Readonly<Record<string, Float32Array>>;
}

type Init = { kind: "normal"; std: number } | { kind: "layerNormGamma" } | { kind: "layerNormBeta" };

interface TensorSpec {
  name: string;
  dims: number[];
  init: Init;
}

function blockSpecs(prefix: string, width: number, mlpDim: number, layers: number): TensorSpec[] {
  const specs: TensorSpec[] = [];
  // fan-in scaling keeps q·k and the MLP's activations O(1), so attention is far from uniform
  // and parity tests exercise the softmax and masks, not just the residual path.
  const linear = (name: string, fanIn: number, fanOut: number): TensorSpec[] => [
    { name: `${name}.weight`, dims: [fanIn, fanOut], init: { kind: "normal", std: 1 / Math.sqrt(fanIn) } },
    { name: `${name}.bias`, dims: [fanOut], init: { kind: "normal", std: 0.02 } },
  ];
  const layerNorm = (name: string): TensorSpec[] => layerNormSpecs(name, width);
  for (let i = 0; i < layers; i++) {
    const block = `${prefix}.blocks.${i}`;
    specs.push(
      ...layerNorm(`${block}.ln1`),
      ...linear(`${block}.attn.q`, width, width),
      ...linear(`${block}.attn.k`, width, width),
      ...linear(`${block}.attn.v`, width, width),
      ...linear(`${block}.attn.out`, width, width),
      ...layerNorm(`${block}.ln2`),
      ...linear(`${block}.mlp.fc1`, width, mlpDim),
      ...linear(`${block}.mlp.fc2`, mlpDim, width),
    );
  }
  return specs;
}

function layerNormSpecs(name: string, width: number): TensorSpec[] {
  return [
    { name: `${name}.gamma`, dims: [width], init: { kind: "layerNormGamma" } },
    { name: `${name}.beta`, dims: [width], init: { kind: "layerNormBeta" } },
  ];
}

/** Every tensor of a CLIP with `config`'s sizes, in a fixed order (the order draws are made). */
function tensorSpecs(config: ClipArchConfig): TensorSpec[] {
  const { vision: v, text: t, embedDim } = config;
  const grid = v.imageSize / v.patchSize;
  return [
    {
      name: "vision.patch_embed",
      dims: [v.width, 3, v.patchSize, v.patchSize],
      init: { kind: "normal", std: 1 / Math.sqrt(3 * v.patchSize * v.patchSize) },
    },
    { name: "vision.class_embed", dims: [v.width], init: { kind: "normal", std: 0.02 } },
    { name: "vision.pos_embed", dims: [grid * grid + 1, v.width], init: { kind: "normal", std: 0.02 } },
    ...layerNormSpecs("vision.ln_pre", v.width),
    ...blockSpecs("vision", v.width, v.mlpDim, v.layers),
    ...layerNormSpecs("vision.ln_post", v.width),
    { name: "vision.proj", dims: [v.width, embedDim], init: { kind: "normal", std: 1 / Math.sqrt(v.width) } },
    { name: "text.token_embed", dims: [t.vocabSize, t.width], init: { kind: "normal", std: 0.02 } },
    { name: "text.pos_embed", dims: [t.contextLength, t.width], init: { kind: "normal", std: 0.01 } },
    ...blockSpecs("text", t.width, t.mlpDim, t.layers),
    ...layerNormSpecs("text.ln_final", t.width),
    { name: "text.proj", dims: [t.width, embedDim], init: { kind: "normal", std: 1 / Math.sqrt(t.width) } },
  ];
}

/** Shape of every weight tensor, by name. */
export function clipTensorShapes(config: ClipArchConfig): Map<string, readonly number[]> {
  return new Map(tensorSpecs(config).map((spec) => [spec.name, spec.dims]));
}

/**
 * Random weights for `config`, identical for identical (config, seed). LayerNorm gammas are
 * ≈ 1 and betas ≈ 0 (with a little noise so that tests notice a swapped or ignored parameter).
 */
export function createClipWeights(config: ClipArchConfig, seed: number): ClipWeights {
  validateClipConfig(config);
  const random = new SeededRandom(seed);
  const tensors: Record<string, Float32Array> = {};
  for (const spec of tensorSpecs(config)) {
    const size = spec.dims.reduce((product, dim) => product * dim, 1);
    switch (spec.init.kind) {
      case "normal":
        tensors[spec.name] = random.normalArray(size, 0, spec.init.std);
        break;
      case "layerNormGamma":
        tensors[spec.name] = random.normalArray(size, 1, 0.05);
        break;
      case "layerNormBeta":
        tensors[spec.name] = random.normalArray(size, 0, 0.02);
        break;
    }
  }
  return { config, tensors };
}

/** The named tensor; throws when it is missing or its size does not match `config`. */
export function weightTensor(weights: ClipWeights, name: string): { data: Float32Array; dims: readonly number[] } {
  const data = weights.tensors[name];
  const dims = clipTensorShapes(weights.config).get(name);
  if (data === undefined || dims === undefined) throw new Error(`CLIP weights lack tensor ${name}`);
  const size = dims.reduce((product, dim) => product * dim, 1);
  if (data.length !== size) throw new Error(`CLIP tensor ${name} has ${data.length} values, expected ${size}`);
  return { data, dims };
}
