import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import type { ModelDirectory } from "./model-dir.js";

async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/**
 * Names a model in verdicts and cache keys: a hash over everything that changes an embedding —
 * the two ONNX towers of the chosen variant, the tokenizer and its special-token settings, the
 * preprocessor config, and the context length. Two directories with the same files get the same
 * fingerprint, wherever they live.
 */
export async function modelFingerprint(model: ModelDirectory): Promise<string> {
  const required = [model.visionModelPath, model.textModelPath, model.tokenizerPath, model.preprocessorConfigPath];
  const optional = ["tokenizer_config.json", "special_tokens_map.json"].map((f) => path.join(model.dir, f));
  const present = await Promise.all(optional.map((f) => fs.stat(f).then((s) => s.isFile(), () => false)));
  const files = [...required, ...optional.filter((_, i) => present[i])];
  const digests = await Promise.all(files.map((f) => sha256File(f)));
  const outer = createHash("sha256");
  files.forEach((file, i) => outer.update(`${path.basename(file)}\0${digests[i] ?? ""}\n`));
  outer.update(`contextLength\0${model.contextLength}\n`);
  return outer.digest("hex").slice(0, 16);
}
