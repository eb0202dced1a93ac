import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { ClipguardError } from "../shared/errors.js";
import type { ModelInfo } from "./clip-model.js";
import type { InferenceReply, InferenceRequest, InferenceThreadData } from "./inference-protocol.js";
import { MicroBatcher } from "./micro-batcher.js";
import type { ImageEmbedder, PreprocessConfig, TextEmbedder } from "./types.js";

export interface InferencePoolOptions {
  modelDir: string;
  /** @default "fp32" */
  variant?: string;
  /** Number of inference threads. @default 1 */
  threads?: number;
  /** ORT intra-op threads per inference thread. @default 1 */
  intraOpThreads?: number;
  /** Largest image batch the micro-batcher forms from concurrent requests. @default 8 */
  maxBatch?: number;
  /** Longest a single image waits for others to batch with while a thread is idle. @default 2 */
  maxBatchWaitMs?: number;
  /** Called with the size of every image-tower run (for the batch-size metric). */
  onImageBatch?: (size: number) => void;
}

interface Pending {
  resolve: (embeddings: Float32Array[]) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  pending: Map<number, Pending>;
}

/**
 * After the build the thread runs from dist. Under tsx/vitest it runs from source: a small
 * bootstrap registers tsx's ESM hooks inside the thread and then imports the .ts entry, because
 * Node 20 does not apply `--import tsx` from a worker's `execArgv` (the import fails with
 * ERR_UNKNOWN_FILE_EXTENSION).
 */
function threadEntry(): URL {
  const built = new URL("./inference-thread.js", import.meta.url);
  if (fs.existsSync(fileURLToPath(built))) return built;
  const source = new URL("./inference-thread.ts", import.meta.url);
  const tsx = import.meta.resolve("tsx/esm/api");
  const bootstrap = `import { register } from ${JSON.stringify(tsx)}; register(); await import(${JSON.stringify(source.href)});`;
  return new URL(`data:text/javascript,${encodeURIComponent(bootstrap)}`);
}

/**
 * Inference threads, each holding its own ONNX sessions. Requests go to the thread with the
 * fewest in flight; a thread that dies fails its requests (retryable) and is replaced.
 */
export class InferencePool implements TextEmbedder, ImageEmbedder {
  private slots: Slot[] = [];
  private nextId = 1;
  private closed = false;
  /** Number of text-tower runs and texts embedded: the worker exports these as metrics. */
  readonly counters = { textRuns: 0, textsEmbedded: 0, imageRuns: 0, imagesEmbedded: 0 };
  info!: ModelInfo;
  preprocess!: PreprocessConfig;
  contextLength = 77;

  private readonly batcher: MicroBatcher<Float32Array, Float32Array>;

  private constructor(private readonly options: Required<InferencePoolOptions>) {
    this.batcher = new MicroBatcher((items) => this.runImageBatch(items), {
      maxBatch: options.maxBatch,
      maxWaitMs: options.maxBatchWaitMs,
      capacity: options.threads,
    });
  }

  static async start(options: InferencePoolOptions): Promise<InferencePool> {
    const pool = new InferencePool({
      variant: "fp32",
      threads: 1,
      intraOpThreads: 1,
      maxBatch: 8,
      maxBatchWaitMs: 2,
      onImageBatch: () => undefined,
      ...options,
    });
    try {
      await Promise.all(Array.from({ length: pool.options.threads }, () => pool.spawn()));
    } catch (err) {
      await pool.close();
      throw err;
    }
    return pool;
  }

  get fingerprint(): string {
    return this.info.fingerprint;
  }

  private spawn(): Promise<void> {
    const data: InferenceThreadData = {
      modelDir: this.options.modelDir,
      variant: this.options.variant,
      intraOpThreads: this.options.intraOpThreads,
    };
    const worker = new Worker(threadEntry(), { workerData: data });
    const slot: Slot = { worker, pending: new Map() };
    return new Promise((resolve, reject) => {
      let ready = false;
      worker.on("message", (message: InferenceReply) => {
        switch (message.type) {
          case "ready":
            ready = true;
            this.info = message.info;
            this.preprocess = message.preprocess;
            this.contextLength = message.contextLength;
            this.slots.push(slot);
            resolve();
            return;
          case "load-error":
            reject(new ClipguardError(message.error.code, message.error.message));
            void worker.terminate();
            return;
          case "result":
            slot.pending.get(message.id)?.resolve(message.embeddings);
            slot.pending.delete(message.id);
            return;
          case "error":
            slot.pending.get(message.id)?.reject(new ClipguardError(message.error.code, message.error.message));
            slot.pending.delete(message.id);
            return;
        }
      });
      worker.on("error", (err) => {
        if (!ready) reject(new ClipguardError("CLIPGUARD_E_MODEL", `inference thread failed to start: ${err.message}`, { cause: err }));
      });
      worker.on("exit", (code) => {
        this.slots = this.slots.filter((s) => s !== slot);
        for (const p of slot.pending.values()) {
          p.reject(new ClipguardError("CLIPGUARD_E_INFERENCE", `inference thread exited (code ${code}) with a request in flight`));
        }
        slot.pending.clear();
        if (!ready) reject(new ClipguardError("CLIPGUARD_E_MODEL", `inference thread exited (code ${code}) while loading the model`));
        else if (!this.closed) this.spawn().catch(() => undefined);
      });
    });
  }

  private request(build: (id: number) => InferenceRequest, transfer: ArrayBuffer[]): Promise<Float32Array[]> {
    const slot = this.slots.reduce<Slot | undefined>((best, s) => (best === undefined || s.pending.size < best.pending.size ? s : best), undefined);
    if (slot === undefined) {
      return Promise.reject(new ClipguardError("CLIPGUARD_E_INFERENCE", this.closed ? "the inference pool is closed" : "no inference thread is running"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      slot.worker.postMessage(build(id), transfer);
    });
  }

  embedTexts(texts: readonly string[]): Promise<Float32Array[]> {
    if (texts.length === 0) return Promise.resolve([]);
    this.counters.textRuns++;
    this.counters.textsEmbedded += texts.length;
    return this.request((id) => ({ id, kind: "texts", texts: [...texts] }), []);
  }

  /**
   * Single images from concurrent callers are batched (see MicroBatcher); a caller that passes
   * several images at once gets one run of its own. The pixel buffer is transferred to the
   * thread: the caller must not use it afterwards.
   */
  async embedPixels(pixels: Float32Array, count: number): Promise<Float32Array[]> {
    if (count === 0) return [];
    if (count === 1) return [await this.batcher.add(pixels)];
    return this.runPixels(pixels, count);
  }

  private runImageBatch(items: Float32Array[]): Promise<Float32Array[]> {
    if (items.length === 1 && items[0] !== undefined) return this.runPixels(items[0], 1);
    const size = items.reduce((n, item) => n + item.length, 0);
    const joined = new Float32Array(size);
    let offset = 0;
    for (const item of items) {
      joined.set(item, offset);
      offset += item.length;
    }
    return this.runPixels(joined, items.length);
  }

  private runPixels(pixels: Float32Array, count: number): Promise<Float32Array[]> {
    this.counters.imageRuns++;
    this.counters.imagesEmbedded += count;
    this.options.onImageBatch(count);
    return this.request((id) => ({ id, kind: "pixels", pixels, count }), [pixels.buffer as ArrayBuffer]);
  }

  async close(): Promise<void> {
    this.closed = true;
    const slots = this.slots;
    this.slots = [];
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}
