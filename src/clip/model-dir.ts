import fs from "node:fs/promises";
import path from "node:path";
import { ClipguardError } from "../shared/errors.js";

/**
 * A CLIP model directory in the Hugging Face ONNX layout (as `Xenova/clip-vit-base-patch32`):
 * config.json, preprocessor_config.json, tokenizer.json (+ tokenizer_config.json,
 * special_tokens_map.json), onnx/text_model[_VARIANT].onnx and onnx/vision_model[_VARIANT].onnx.
 */
export interface ModelDirectory {
  dir: string;
  /** Human-readable name: config.json `_name_or_path`, else the directory name. */
  name: string;
  variant: string;
  visionModelPath: string;
  textModelPath: string;
  tokenizerPath: string;
  preprocessorConfigPath: string;
  config: Record<string, unknown>;
  preprocessorConfig: unknown;
  tokenizerJson: unknown;
  tokenizerConfig: Record<string, unknown>;
  specialTokensMap: Record<string, unknown>;
  /** The text tower's context length (CLIP: 77). */
  contextLength: number;
}

/** `fp32` (or no variant) means the plain `*_model.onnx` files. */
export function onnxFileName(tower: "vision" | "text", variant: string): string {
  if (!/^[a-z0-9]+$/.test(variant)) {
    throw new ClipguardError("CLIPGUARD_E_MODEL", `invalid variant "${variant}": letters and digits only (fp32, quantized, fp16, …)`);
  }
  return variant === "fp32" ? `${tower}_model.onnx` : `${tower}_model_${variant}.onnx`;
}

async function readJson(file: string, required: boolean): Promise<unknown> {
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch (err) {
    if (!required) return undefined;
    throw new ClipguardError("CLIPGUARD_E_MODEL", `model directory: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"}); expected a CLIP export in the Hugging Face ONNX layout`, { cause: err });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ClipguardError("CLIPGUARD_E_MODEL", `model directory: ${file} is not valid JSON`, { cause: err });
  }
}

function asObject(value: unknown, file: string): Record<string, unknown> {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ClipguardError("CLIPGUARD_E_MODEL", `model directory: ${file} must hold a JSON object`);
  }
  return value as Record<string, unknown>;
}

async function requireFile(file: string, what: string): Promise<void> {
  const stat = await fs.stat(file).catch(() => undefined);
  if (!stat?.isFile()) {
    throw new ClipguardError("CLIPGUARD_E_MODEL", `model directory: ${file} is missing; expected ${what}`);
  }
}

function contextLengthOf(config: Record<string, unknown>, tokenizerConfig: Record<string, unknown>): number {
  const textConfig = config["text_config"];
  const fromConfig =
    typeof textConfig === "object" && textConfig !== null
      ? (textConfig as Record<string, unknown>)["max_position_embeddings"]
      : undefined;
  const candidates = [fromConfig, tokenizerConfig["model_max_length"]];
  for (const c of candidates) {
    // tokenizer_config.json often says 1e30 for "no limit"; only a plausible value counts
    if (typeof c === "number" && Number.isInteger(c) && c > 2 && c <= 4096) return c;
  }
  return 77;
}

/** Reads and checks a model directory; fails with CLIPGUARD_E_MODEL naming the file and what was expected. */
export async function openModelDirectory(dir: string, variant = "fp32"): Promise<ModelDirectory> {
  const root = path.resolve(dir);
  const stat = await fs.stat(root).catch(() => undefined);
  if (stat === undefined) {
    throw new ClipguardError("CLIPGUARD_E_MODEL", `model directory ${root} does not exist (pass --model DIR or set CLIPGUARD_MODEL_DIR)`);
  }
  if (!stat.isDirectory()) {
    throw new ClipguardError("CLIPGUARD_E_MODEL", `model directory ${root} is not a directory; expected a CLIP export in the Hugging Face ONNX layout`);
  }
  const visionModelPath = path.join(root, "onnx", onnxFileName("vision", variant));
  const textModelPath = path.join(root, "onnx", onnxFileName("text", variant));
  const tokenizerPath = path.join(root, "tokenizer.json");
  const preprocessorConfigPath = path.join(root, "preprocessor_config.json");
  await requireFile(visionModelPath, `the image tower for variant "${variant}" (pixel_values float32 [batch,3,H,W] -> image_embeds)`);
  await requireFile(textModelPath, `the text tower for variant "${variant}" (input_ids int64 [batch,seq] -> text_embeds)`);

  const config = asObject(await readJson(path.join(root, "config.json"), true), "config.json");
  const preprocessorConfig = await readJson(preprocessorConfigPath, true);
  const tokenizerJson = await readJson(tokenizerPath, true);
  const tokenizerConfig = asObject(await readJson(path.join(root, "tokenizer_config.json"), false), "tokenizer_config.json");
  const specialTokensMap = asObject(await readJson(path.join(root, "special_tokens_map.json"), false), "special_tokens_map.json");
  const nameOrPath = config["_name_or_path"];
  return {
    dir: root,
    name: typeof nameOrPath === "string" && nameOrPath.length > 0 ? nameOrPath : path.basename(root),
    variant,
    visionModelPath,
    textModelPath,
    tokenizerPath,
    preprocessorConfigPath,
    config,
    preprocessorConfig,
    tokenizerJson,
    tokenizerConfig,
    specialTokensMap,
    contextLength: contextLengthOf(config, tokenizerConfig),
  };
}
