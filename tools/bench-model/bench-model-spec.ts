/**
 * The benchmark models: CLIP architectures with seeded random weights. Speed depends on the
 * architecture, not on the weight values, so `vit-b-32` runs exactly as fast as OpenAI's
 * CLIP ViT-B/32 without shipping or downloading 600 MB of trained weights. `smoke` is a tiny CLIP
 * for checking that the benchmark harness runs at all (test/bench.test.ts).
 */
import { type ClipArchConfig, multiplyAccumulates, VIT_B_32_CONFIG } from "../onnx/clip-architecture.js";

/**
 * Bumped whenever the generator would write different files for the same spec; a cached model
 * with another version is regenerated.
 */
export const BENCH_GENERATOR_VERSION = 1;

/** CLIP's end-of-text token id in the real tokenizer (pooling position of the text tower). */
const CLIP_EOS = 49407;

export interface BenchModelSpec {
  /** Folder name under the cache directory, and the id transformers.js loads it by. */
  id: string;
  /** config.json `_name_or_path`: names the model in verdicts. */
  name: string;
  seed: number;
  /** The text tower declares attention_mask, as Hugging Face's ONNX exports of CLIP do. */
  config: ClipArchConfig;
}

export const BENCH_MODELS = {
  "vit-b-32": {
    id: "vit-b-32",
    name: "clipguard-bench/clip-vit-b-32-random",
    seed: 20_251_127,
    config: Object.freeze({ ...VIT_B_32_CONFIG, text: Object.freeze({ ...VIT_B_32_CONFIG.text, withAttentionMask: true }) }),
  },
  smoke: {
    id: "smoke",
    name: "clipguard-bench/tiny-clip-random",
    seed: 7,
    config: Object.freeze({
      embedDim: 8,
      vision: Object.freeze({ imageSize: 32, patchSize: 8, width: 16, layers: 2, heads: 2, mlpDim: 32 }),
      text: Object.freeze({
        vocabSize: 49408,
        contextLength: 77,
        width: 16,
        layers: 2,
        heads: 2,
        mlpDim: 32,
        eosTokenId: CLIP_EOS,
        withAttentionMask: true,
      }),
    }),
  },
} as const satisfies Record<string, BenchModelSpec>;

export type BenchModelId = keyof typeof BENCH_MODELS;

/**
 * Published multiply-accumulate counts of CLIP ViT-B/32 (≈ 4.4 G per 224-px image, ≈ 3.0 G per
 * 77-token prompt); the generator checks its architecture against them.
 */
export const VIT_B_32_PUBLISHED_MACS = Object.freeze({ vision: 4.4e9, text: 2.98e9 });

/** MACs per image and per prompt, and whether ViT-B/32's are within 2 % of the published ones. */
export function benchModelMacs(spec: BenchModelSpec): { vision: number; text: number; matchesPublished: boolean | undefined } {
  const macs = multiplyAccumulates(spec.config);
  if (spec.id !== "vit-b-32") return { ...macs, matchesPublished: undefined };
  const close = (x: number, reference: number) => Math.abs(x / reference - 1) <= 0.02;
  return { ...macs, matchesPublished: close(macs.vision, VIT_B_32_PUBLISHED_MACS.vision) && close(macs.text, VIT_B_32_PUBLISHED_MACS.text) };
}
