/**
 * Entry point of an inference thread: loads the model once, then answers embedding requests.
 * onnxruntime-node's `run` blocks the thread it runs on, so it runs here and never on the main
 * event loop, which must keep BullMQ locks, health checks and metrics responsive.
 */
import { parentPort, workerData } from "node:worker_threads";
import { toErrorInfo } from "../shared/errors.js";
import { ClipModel } from "./clip-model.js";
import type { InferenceReply, InferenceRequest, InferenceThreadData } from "./inference-protocol.js";

const port = parentPort;
if (port === null) throw new Error("inference-thread.ts must run as a worker thread");
const data = workerData as InferenceThreadData;

function reply(message: InferenceReply, transfer: ArrayBuffer[] = []): void {
  port?.postMessage(message, transfer);
}

try {
  const model = await ClipModel.load(data.modelDir, { variant: data.variant, intraOpThreads: data.intraOpThreads });
  port.on("message", (request: InferenceRequest) => {
    const work = request.kind === "texts" ? model.embedTexts(request.texts) : model.embedPixels(request.pixels, request.count);
    work.then(
      (embeddings) => reply({ type: "result", id: request.id, embeddings }, embeddings.map((e) => e.buffer as ArrayBuffer)),
      (err: unknown) => reply({ type: "error", id: request.id, error: toErrorInfo(err) }),
    );
  });
  reply({ type: "ready", info: model.info, preprocess: model.preprocess, contextLength: model.tokenizer.contextLength });
} catch (err) {
  reply({ type: "load-error", error: toErrorInfo(err) });
}
