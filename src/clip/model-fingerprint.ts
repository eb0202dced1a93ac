import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import path from "node:path";
import type { ModelDirectory } from "./model-dir.js";

async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/**
 * Names a model in verdicts and cache keys: a hash over the two ONNX towers of the chosen variant,
 * the tokenizer and the preprocessor config — everything that changes an embedding. Two directories
 * with the same files get the same fingerprint, wherever they live.
 */
export async function modelFingerprint(model: ModelDirectory): Promise<string> {
  const files = [model.visionModelPath, model.textModelPath, model.tokenizerPath, model.preprocessorConfigPath];
  const digests = await Promise.all(files.map((f) => sha256File(f)));
  const outer = createHash("sha256");
  files.forEach((file, i) => outer.update(`${path.basename(file)}\0${digests[i] ?? ""}\n`));
  return outer.digest("hex").slice(0, 16);
}
