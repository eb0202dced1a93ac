import fs from "node:fs";
import { fileURLToPath } from "node:url";
import type { ErrorCode } from "../shared/errors.js";
import type { ModelInfo } from "./clip-model.js";
import type { PreprocessConfig } from "./types.js";

/** What an inference thread is started with. */
export interface InferenceThreadData {
  modelDir: string;
  variant: string;
  intraOpThreads: number;
}

export type InferenceRequest =
  | { id: number; kind: "texts"; texts: string[] }
  | { id: number; kind: "pixels"; pixels: Float32Array; count: number };

export type InferenceReply =
  | { type: "ready"; info: ModelInfo; preprocess: PreprocessConfig; contextLength: number }
  | { type: "load-error"; error: { code: ErrorCode; message: string } }
  | { type: "result"; id: number; embeddings: Float32Array[] }
  | { type: "error"; id: number; error: { code: ErrorCode; message: string } };

/**
 * The inference thread's entry module. After the build the thread runs from dist. Under
 * tsx/vitest it runs from source: a small bootstrap registers tsx's ESM hooks inside the thread
 * and then imports the .ts entry, because Node 20 does not apply `--import tsx` from a worker's
 * `execArgv` (the import fails with ERR_UNKNOWN_FILE_EXTENSION).
 */
export function inferenceThreadEntry(): URL {
  const built = new URL("./inference-thread.js", import.meta.url);
  if (fs.existsSync(fileURLToPath(built))) return built;
  const source = new URL("./inference-thread.ts", import.meta.url);
  const tsx = import.meta.resolve("tsx/esm/api");
  const bootstrap = `import { register } from ${JSON.stringify(tsx)}; register(); await import(${JSON.stringify(source.href)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(bootstrap)}`);
}
