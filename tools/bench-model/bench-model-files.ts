/**
 * Writes a benchmark model directory in the Hugging Face CLIP ONNX layout:
 *
 *   config.json, preprocessor_config.json, tokenizer files (the real CLIP tokenizer from
 *   ../shared/clip-tokenizer/), onnx/vision_model.onnx and onnx/text_model.onnx (what clipguard
 *   loads), onnx/model.onnx (the combined CLIPModel graph that transformers.js loads),
 *   .bench-model.json (the completeness marker, written last).
 *
 * The directory lives in a cache folder outside git; `ensureBenchModel` reuses it when the
 * marker names the same generator version, seed and architecture and every file it lists has the
 * recorded size, and regenerates it otherwise.
 */
import { copyFile, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildTextModel, buildVisionModel, createClipWeights } from "../onnx/clip-architecture.js";
import { CLIP_LOGIT_SCALE, combineClipTowers } from "../onnx/clip-combined-graph.js";
import { BENCH_GENERATOR_VERSION, BENCH_MODELS, type BenchModelId, type BenchModelSpec } from "./bench-model-spec.js";

export const REPOSITORY_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
/** Where benchmark models are cached (git-ignored). */
export const BENCH_MODEL_CACHE = path.join(REPOSITORY_ROOT, ".cache", "bench-model");
/** The real CLIP ViT-B/32 tokenizer and preprocessor config (read-only test data beside the repository). */
export const CLIP_TOKENIZER_DIR = path.resolve(REPOSITORY_ROOT, "..", "shared", "clip-tokenizer");
const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"] as const;
const MARKER = ".bench-model.json";

interface Marker {
  generatorVersion: number;
  id: string;
  name: string;
  seed: number;
  config: unknown;
  /** Relative path → size in bytes. */
  files: Record<string, number>;
}

export interface BenchModel {
  dir: string;
  spec: BenchModelSpec;
  /** False when a complete cached copy was reused. */
  generated: boolean;
}

function expectedMarker(spec: BenchModelSpec, files: Record<string, number>): Marker {
  return { generatorVersion: BENCH_GENERATOR_VERSION, id: spec.id, name: spec.name, seed: spec.seed, config: spec.config, files };
}

function configJson(spec: BenchModelSpec): Record<string, unknown> {
  const { config } = spec;
  return {
    _name_or_path: spec.name,
    architectures: ["CLIPModel"],
    model_type: "clip",
    projection_dim: config.embedDim,
    logit_scale_init_value: CLIP_LOGIT_SCALE,
    clipguard_bench_note: "CLIP architecture with seeded random weights, for speed measurements only: it recognizes nothing.",
    text_config: {
      model_type: "clip_text_model",
      vocab_size: config.text.vocabSize,
      max_position_embeddings: config.text.contextLength,
      hidden_size: config.text.width,
      num_hidden_layers: config.text.layers,
      num_attention_heads: config.text.heads,
      intermediate_size: config.text.mlpDim,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
      projection_dim: config.embedDim,
      bos_token_id: 49406,
      eos_token_id: config.text.eosTokenId,
      pad_token_id: 1,
    },
    vision_config: {
      model_type: "clip_vision_model",
      image_size: config.vision.imageSize,
      patch_size: config.vision.patchSize,
      num_channels: 3,
      hidden_size: config.vision.width,
      num_hidden_layers: config.vision.layers,
      num_attention_heads: config.vision.heads,
      intermediate_size: config.vision.mlpDim,
      hidden_act: "quick_gelu",
      layer_norm_eps: 1e-5,
      projection_dim: config.embedDim,
    },
  };
}

/** CLIP's own preprocessor_config.json, with the crop and shortest edge set to the tower's input size. */
async function preprocessorConfig(spec: BenchModelSpec): Promise<Record<string, unknown>> {
  const real = JSON.parse(await readFile(path.join(CLIP_TOKENIZER_DIR, "preprocessor_config.json"), "utf8")) as Record<string, unknown>;
  const size = spec.config.vision.imageSize;
  return { ...real, crop_size: { height: size, width: size }, size: { shortest_edge: size } };
}

async function fileSize(file: string): Promise<number | undefined> {
  try {
    return (await stat(file)).size;
  } catch {
    return undefined;
  }
}

/** Whether `dir` holds a complete model written by this generator version for `spec`. */
export async function isBenchModelComplete(dir: string, spec: BenchModelSpec): Promise<boolean> {
  let marker: Marker;
  try {
    marker = JSON.parse(await readFile(path.join(dir, MARKER), "utf8")) as Marker;
  } catch {
    return false;
  }
  if (JSON.stringify(expectedMarker(spec, marker.files)) !== JSON.stringify(marker)) return false;
  if (Object.keys(marker.files).length === 0) return false;
  for (const [relative, size] of Object.entries(marker.files)) {
    if ((await fileSize(path.join(dir, relative))) !== size) return false;
  }
  return true;
}

/**
 * Writes the model for `spec` into `target` (replacing whatever is there). The files are written
 * into a sibling folder that is renamed into place at the end, so a reader never sees a half-written
 * model. `log` gets one line per step: generating ViT-B/32 takes ~30 s and writes ~1.2 GB.
 */
export async function writeBenchModel(target: string, spec: BenchModelSpec, log: (line: string) => void = () => {}): Promise<void> {
  if ((await fileSize(path.join(CLIP_TOKENIZER_DIR, "tokenizer.json"))) === undefined) {
    throw new Error(`the benchmark model needs the real CLIP tokenizer files in ${CLIP_TOKENIZER_DIR} (not found)`);
  }
  const dir = `${target}.partial-${process.pid}`;
  await rm(dir, { recursive: true, force: true });
  await mkdir(path.join(dir, "onnx"), { recursive: true });
  const files: Record<string, number> = {};
  const write = async (relative: string, contents: Uint8Array | string) => {
    await writeFile(path.join(dir, relative), contents);
    files[relative] = (await stat(path.join(dir, relative))).size;
  };
  for (const file of TOKENIZER_FILES) {
    await copyFile(path.join(CLIP_TOKENIZER_DIR, file), path.join(dir, file));
    files[file] = (await stat(path.join(dir, file))).size;
  }
  await write("config.json", `${JSON.stringify(configJson(spec), null, 2)}\n`);
  await write("preprocessor_config.json", `${JSON.stringify(await preprocessorConfig(spec), null, 2)}\n`);

  const started = performance.now();
  const seconds = () => `${((performance.now() - started) / 1000).toFixed(1)} s`;
  const weights = createClipWeights(spec.config, spec.seed);
  log(`weights drawn (${seconds()})`);
  const vision = buildVisionModel(weights);
  await write("onnx/vision_model.onnx", vision);
  log(`onnx/vision_model.onnx written (${seconds()})`);
  const text = buildTextModel(weights);
  await write("onnx/text_model.onnx", text);
  log(`onnx/text_model.onnx written (${seconds()})`);
  await write("onnx/model.onnx", combineClipTowers(vision, text, spec.config.embedDim));
  log(`onnx/model.onnx written (${seconds()})`);
  await writeFile(path.join(dir, MARKER), `${JSON.stringify(expectedMarker(spec, files), null, 2)}\n`);
  await rm(target, { recursive: true, force: true });
  await rename(dir, target);
}

/** The cached model `id` under `cacheRoot`, generated first when missing or incomplete. */
export async function ensureBenchModel(
  id: BenchModelId,
  options: { cacheRoot?: string; force?: boolean; log?: (line: string) => void } = {},
): Promise<BenchModel> {
  const spec: BenchModelSpec = BENCH_MODELS[id];
  const dir = path.join(options.cacheRoot ?? BENCH_MODEL_CACHE, spec.id);
  if (options.force !== true && (await isBenchModelComplete(dir, spec))) return { dir, spec, generated: false };
  await writeBenchModel(dir, spec, options.log);
  return { dir, spec, generated: true };
}
