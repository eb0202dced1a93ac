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
