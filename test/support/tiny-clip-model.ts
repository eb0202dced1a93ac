/**
 * A tiny CLIP-shaped model directory in the Hugging Face ONNX layout, written into a temp dir at
 * test time: seeded random weights (tools/onnx) behind the real CLIP tokenizer (copied from
 * ../shared/clip-tokenizer into the temp dir, never into the repository). The vocabulary is
 * CLIP's 49408 tokens so the real token ids fit; every width is tiny so that loading and the
 * plain-TypeScript reference (test/support/clip-reference.ts) stay fast.
 */
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import {
  buildTextModel,
  buildVisionModel,
  type ClipArchConfig,
  type ClipWeights,
  createClipWeights,
} from "../../tools/onnx/clip-architecture.js";
import { attr, GraphBuilder } from "../../tools/onnx/graph-builder.js";

/** The real CLIP ViT-B/32 tokenizer files (test data, used by path). */
export const CLIP_TOKENIZER_DIR = path.resolve("../shared/clip-tokenizer");
export const CLIP_TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.json",
  "merges.txt",
] as const;

export const CLIP_BOS = 49406;
export const CLIP_EOS = 49407;

/** Square input size of the tiny image tower (also its preprocessor crop and shortest edge). */
export const TINY_IMAGE_SIZE = 32;

/** The plain fp32 variant: no attention_mask input, as in OpenAI's CLIP export. */
export const TINY_CLIP: ClipArchConfig = Object.freeze({
  embedDim: 8,
  vision: Object.freeze({ imageSize: TINY_IMAGE_SIZE, patchSize: 8, width: 16, layers: 2, heads: 2, mlpDim: 32 }),
  text: Object.freeze({ vocabSize: 49408, contextLength: 77, width: 16, layers: 2, heads: 2, mlpDim: 32, eosTokenId: CLIP_EOS }),
});

/** The `quantized` variant: other weights, and a text tower that declares attention_mask. */
export const TINY_CLIP_MASKED: ClipArchConfig = Object.freeze({
  ...TINY_CLIP,
  text: Object.freeze({ ...TINY_CLIP.text, withAttentionMask: true }),
});

export const TINY_SEED = 20240601;
export const TINY_QUANTIZED_SEED = 77;

export interface TinyClipModel {
  dir: string;
  /** Weights of `onnx/*_model.onnx`. */
  weights: ClipWeights;
  /** Weights of `onnx/*_model_quantized.onnx`, when written. */
  quantized?: ClipWeights;
}

export interface TinyClipOptions {
  /**
   * Also write `onnx/{vision,text}_model_quantized.onnx` with another seed, the text tower
   * declaring attention_mask.
   * @default false
   */
  quantized?: boolean;
  /** config.json `_name_or_path`. @default "clipguard-test/tiny-clip" */
  name?: string;
}

/** preprocessor_config.json of CLIP ViT with the crop and the shortest edge set to the tiny size. */
export async function tinyPreprocessorConfig(): Promise<Record<string, unknown>> {
  const real = JSON.parse(await readFile(path.join(CLIP_TOKENIZER_DIR, "preprocessor_config.json"), "utf8")) as Record<string, unknown>;
  return { ...real, crop_size: { height: TINY_IMAGE_SIZE, width: TINY_IMAGE_SIZE }, size: { shortest_edge: TINY_IMAGE_SIZE } };
}

function configJson(config: ClipArchConfig, name: string): Record<string, unknown> {
  return {
    _name_or_path: name,
    model_type: "clip",
    projection_dim: config.embedDim,
    text_config: {
      model_type: "clip_text_model",
      vocab_size: config.text.vocabSize,
      max_position_embeddings: config.text.contextLength,
      hidden_size: config.text.width,
      num_hidden_layers: config.text.layers,
      num_attention_heads: config.text.heads,
      intermediate_size: config.text.mlpDim,
      bos_token_id: CLIP_BOS,
      eos_token_id: CLIP_EOS,
      pad_token_id: CLIP_EOS,
    },
    vision_config: {
      model_type: "clip_vision_model",
      image_size: config.vision.imageSize,
      patch_size: config.vision.patchSize,
      hidden_size: config.vision.width,
      num_hidden_layers: config.vision.layers,
      num_attention_heads: config.vision.heads,
      intermediate_size: config.vision.mlpDim,
    },
  };
}

/** Writes the tiny model into `dir` (created if needed) and returns the weights behind it. */
export async function writeTinyClipModel(dir: string, options: TinyClipOptions = {}): Promise<TinyClipModel> {
  const onnxDir = path.join(dir, "onnx");
  await mkdir(onnxDir, { recursive: true });
  await Promise.all(CLIP_TOKENIZER_FILES.map((file) => copyFile(path.join(CLIP_TOKENIZER_DIR, file), path.join(dir, file))));
  await writeFile(path.join(dir, "config.json"), JSON.stringify(configJson(TINY_CLIP, options.name ?? "clipguard-test/tiny-clip"), null, 2));
  await writeFile(path.join(dir, "preprocessor_config.json"), JSON.stringify(await tinyPreprocessorConfig(), null, 2));

  const weights = createClipWeights(TINY_CLIP, TINY_SEED);
  await writeFile(path.join(onnxDir, "vision_model.onnx"), buildVisionModel(weights));
  await writeFile(path.join(onnxDir, "text_model.onnx"), buildTextModel(weights));
  if (options.quantized !== true) return { dir, weights };

  const quantized = createClipWeights(TINY_CLIP_MASKED, TINY_QUANTIZED_SEED);
  await writeFile(path.join(onnxDir, "vision_model_quantized.onnx"), buildVisionModel(quantized));
  await writeFile(path.join(onnxDir, "text_model_quantized.onnx"), buildTextModel(quantized));
  return { dir, weights, quantized };
}

/**
 * A text tower that declares an input a CLIP text tower does not take (`position_ids`, as some
 * exports add): it loads in ONNX Runtime, so only clipguard's input check can refuse it.
 */
export function textModelWithExtraInput(): Uint8Array {
  const g = new GraphBuilder("text_with_position_ids");
  const ids = g.addInput("input_ids", "int64", ["batch", "sequence"]);
  const positions = g.addInput("position_ids", "int64", ["batch", "sequence"]);
  const sum = g.op("Cast", [g.op("Add", [ids, positions])], { to: attr.int(1) });
  g.addOutput("text_embeds", "float32", ["batch", "sequence"], sum);
  return g.toBytes();
}
