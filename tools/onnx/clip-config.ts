/** Sizes of a CLIP model (OpenAI layout: ViT image tower, causal transformer text tower). */

export interface ClipVisionConfig {
  /** Square input size in pixels (CLIP ViT-B/32: 224). */
  imageSize: number;
  /** Square patch size; must divide imageSize (ViT-B/32: 32). */
  patchSize: number;
  /** Transformer width (ViT-B/32: 768). */
  width: number;
  layers: number;
  /** Attention heads; must divide width. */
  heads: number;
  /** Hidden size of the MLP (ViT-B/32: 3072). */
  mlpDim: number;
}

export interface ClipTextConfig {
  vocabSize: number;
  /** Longest accepted sequence; the number of positional embeddings (CLIP: 77). */
  contextLength: number;
  width: number;
  layers: number;
  heads: number;
  mlpDim: number;
  /** The pooled position is the first one holding this id. */
  eosTokenId: number;
  /**
   * Adds an `attention_mask` int64 [batch, sequence] input; keys where it is 0 are masked on top
   * of the causal mask.
   * @default false
   */
  withAttentionMask?: boolean;
}

export interface ClipArchConfig {
  /** Size of the shared image/text embedding space. */
  embedDim: number;
  vision: ClipVisionConfig;
  text: ClipTextConfig;
}

/** OpenAI CLIP ViT-B/32's sizes (the model clipguard is benchmarked against). */
export const VIT_B_32_CONFIG: ClipArchConfig = Object.freeze({
  embedDim: 512,
  vision: Object.freeze({ imageSize: 224, patchSize: 32, width: 768, layers: 12, heads: 12, mlpDim: 3072 }),
  text: Object.freeze({
    vocabSize: 49408,
    contextLength: 77,
    width: 512,
    layers: 12,
    heads: 8,
    mlpDim: 2048,
    eosTokenId: 49407,
  }),
});

/** Multiply-accumulate counts of one forward pass. */
export interface MacCount {
  /** Per image. */
  vision: number;
  /** Per prompt at the full context length. */
  text: number;
}

/** MACs of `layers` pre-LN transformer blocks over `tokens` tokens (LayerNorms and softmax left out). */
function transformerMacs(tokens: number, width: number, mlpDim: number, layers: number): number {
  const projections = 4 * tokens * width * width; // q, k, v, out
  const attention = 2 * tokens * tokens * width; // q·kᵀ and weights·v over all heads
  const mlp = 2 * tokens * width * mlpDim;
  return layers * (projections + attention + mlp);
}

/**
 * Multiply-accumulates per image and per prompt (matrix products and the patch convolution only;
 * element-wise ops are a rounding error). ViT-B/32 gives ≈ 4.41e9 and ≈ 2.98e9.
 */
export function multiplyAccumulates(config: ClipArchConfig): MacCount {
  const { vision, text, embedDim } = config;
  const grid = vision.imageSize / vision.patchSize;
  const patches = grid * grid;
  const patchEmbedding = patches * vision.width * 3 * vision.patchSize * vision.patchSize;
  const visionMacs =
    patchEmbedding +
    transformerMacs(patches + 1, vision.width, vision.mlpDim, vision.layers) +
    vision.width * embedDim;
  const textMacs = transformerMacs(text.contextLength, text.width, text.mlpDim, text.layers) + text.width * embedDim;
  return { vision: visionMacs, text: textMacs };
}

/** Throws when sizes do not fit together (patch grid, head split, EOS id). */
export function validateClipConfig(config: ClipArchConfig): void {
  const { vision, text } = config;
  const problems: string[] = [];
  if (vision.imageSize % vision.patchSize !== 0) problems.push("vision.patchSize must divide vision.imageSize");
  if (vision.width % vision.heads !== 0) problems.push("vision.heads must divide vision.width");
  if (text.width % text.heads !== 0) problems.push("text.heads must divide text.width");
  if (text.eosTokenId < 0 || text.eosTokenId >= text.vocabSize) problems.push("text.eosTokenId must be < vocabSize");
  if (problems.length > 0) throw new Error(`invalid CLIP config: ${problems.join("; ")}`);
}
