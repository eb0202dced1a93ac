import { Worker } from "node:worker_threads";
import { ClipguardError } from "../shared/errors.js";
import type { ModelInfo } from "./clip-model.js";
import { inferenceThreadEntry, type InferenceReply, type InferenceRequest, type InferenceThreadData } from "./inference-protocol.js";
import { MicroBatcher } from "./micro-batcher.js";
import type { ImageEmbedder, PreprocessConfig, TextEmbedder } from "./types.js";

/** Why a thread was replaced: a run passed the deadline (the thread is retired), or the thread died. */
export type ThreadLoss = "timeout" | "exit";

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
  /**
   * Longest one run (a text batch or an image batch) may take once a thread has started it. A run
   * past it fails with CLIPGUARD_E_INFERENCE_TIMEOUT and a replacement thread takes over: ONNX
   * Runtime cannot cancel a run, so the old thread is terminated only once its run returns.
   * 0: no deadline. @default 60000
   */
  timeoutMs?: number;
  /** Called with the size of every image-tower run (for the batch-size metric). */
  onImageBatch?: (size: number) => void;
  /** Called when a thread is lost and a replacement is being started. */
  onThreadReplaced?: (reason: ThreadLoss, err: ClipguardError) => void;
  /** Called when a replacement thread could not load the model (the next request tries again). */
  onReplacementFailed?: (err: unknown) => void;
}

/** A request waiting for, or running on, a thread. */
interface Task {
  describe: string;
  build: (id: number) => InferenceRequest;
  transfer: ArrayBuffer[];
  resolve: (embeddings: Float32Array[]) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  exited: Promise<void>;
  /** Inside a run (from the request until the thread answers), even after its task was failed. */
  busy: boolean;
  /** The one request the thread runs; a thread gets the next only when it answers. */
  running?: { id: number; task: Task; deadline?: NodeJS.Timeout };
  /** Set once the pool gave the thread up (deadline passed, died, pool closed): it serves no more. */
  retired: boolean;
}

/**
 * Inference threads, each holding its own ONNX sessions. Requests wait in one queue and each
 * thread runs one at a time, so the deadline measures the run itself, never time queued behind
 * other runs, and a lost thread takes only its own run with it: a run past the deadline fails
 * (CLIPGUARD_E_INFERENCE_TIMEOUT), a run on a thread that died fails (CLIPGUARD_E_INFERENCE), both
 * retryable, and the queue goes on with the other threads and a replacement.
 *
 * A thread is terminated only between runs: `worker.terminate()` cannot stop a native ONNX
 * Runtime run, and when such a run returns into a terminating thread onnxruntime-node throws a
 * C++ exception that aborts the whole process (SIGABRT; process.exit waits for such a thread and
 * then aborts the same way). A thread whose run passed the deadline is therefore retired — it
 * gets no more work, a replacement is started at once — and terminated as soon as its run
 * returns; close() waits for runs in flight for the same reason.
 */
export class InferencePool implements TextEmbedder, ImageEmbedder {
  /** Threads that serve requests. */
  private live: Slot[] = [];
  /** Every thread that has not exited yet, retired ones included. */
  private threads = new Set<Slot>();
  private queue: Task[] = [];
  private starting = 0;
  private nextId = 1;
  private closed = false;
  /** Number of text-tower runs and texts embedded: the worker exports these as metrics. */
  readonly counters = { textRuns: 0, textsEmbedded: 0, imageRuns: 0, imagesEmbedded: 0, threadsReplaced: 0 };
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
      timeoutMs: 60_000,
      onImageBatch: () => undefined,
      onThreadReplaced: () => undefined,
      onReplacementFailed: () => undefined,
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

  /** Threads serving requests (replacements still loading the model not counted). */
  get liveThreads(): number {
    return this.live.length;
  }

  private spawn(): Promise<void> {
    const data: InferenceThreadData = {
      modelDir: this.options.modelDir,
      variant: this.options.variant,
      intraOpThreads: this.options.intraOpThreads,
    };
    const worker = new Worker(inferenceThreadEntry(), { workerData: data });
    const slot: Slot = { worker, exited: new Promise((resolve) => worker.once("exit", () => resolve())), busy: false, retired: false };
    this.threads.add(slot);
    return new Promise((resolve, reject) => {
      let ready = false;
      worker.on("message", (message: InferenceReply) => {
        switch (message.type) {
          case "ready":
            ready = true;
            if (this.closed) {
              slot.retired = true;
              void worker.terminate();
              reject(new ClipguardError("CLIPGUARD_E_SHUTDOWN", "the inference pool closed while the thread loaded the model"));
              return;
            }
            this.info = message.info;
            this.preprocess = message.preprocess;
            this.contextLength = message.contextLength;
            this.live.push(slot);
            resolve();
            this.dispatch();
            return;
          case "load-error":
            reject(new ClipguardError(message.error.code, message.error.message));
            void worker.terminate();
            return;
          case "result":
          case "error":
            this.answered(slot, message);
            return;
        }
      });
      worker.on("error", (err) => {
        if (!ready) reject(new ClipguardError("CLIPGUARD_E_MODEL", `inference thread failed to start: ${err.message}`, { cause: err }));
      });
      worker.on("exit", (code) => {
        this.threads.delete(slot);
        slot.busy = false;
        if (!ready) reject(new ClipguardError("CLIPGUARD_E_MODEL", `inference thread exited (code ${code}) while loading the model`));
        else if (!slot.retired) this.replace(slot, "exit", new ClipguardError("CLIPGUARD_E_INFERENCE", `inference thread exited (code ${code}) with a request in flight`));
      });
    });
  }

  private answered(slot: Slot, message: Extract<InferenceReply, { type: "result" | "error" }>): void {
    slot.busy = false;
    const running = slot.running;
    if (running?.id === message.id) {
      clearTimeout(running.deadline);
      slot.running = undefined;
      if (message.type === "result") running.task.resolve(message.embeddings);
      else running.task.reject(new ClipguardError(message.error.code, message.error.message));
    }
    if (slot.retired) void slot.worker.terminate();
    else this.dispatch();
  }

  /** Takes a thread out of service, fails its run and starts a replacement (unless closed). */
  private replace(slot: Slot, reason: ThreadLoss, err: ClipguardError): void {
    this.retire(slot);
    const running = slot.running;
    slot.running = undefined;
    if (running !== undefined) {
      clearTimeout(running.deadline);
      running.task.reject(err);
    }
    if (this.closed) return;
    this.counters.threadsReplaced++;
    this.options.onThreadReplaced(reason, err);
    this.startReplacement();
  }

  private retire(slot: Slot): void {
    slot.retired = true;
    this.live = this.live.filter((s) => s !== slot);
    if (!slot.busy) void slot.worker.terminate();
  }

  private startReplacement(): void {
    this.starting++;
    this.spawn()
      .catch((err: unknown) => {
        if (!this.closed) this.options.onReplacementFailed(err);
      })
      .finally(() => {
        this.starting--;
        this.dispatch();
      });
  }

  /** Hands queued requests to idle threads; fails them when no thread is running or coming. */
  private dispatch(): void {
    for (const slot of this.live) {
      if (slot.busy) continue;
      const task = this.queue.shift();
      if (task === undefined) return;
      this.post(slot, task);
    }
    if (this.queue.length > 0 && this.live.length === 0 && this.starting === 0) {
      const err = this.closed
        ? new ClipguardError("CLIPGUARD_E_SHUTDOWN", "the inference pool closed before the request ran")
        : new ClipguardError("CLIPGUARD_E_INFERENCE", "no inference thread is running (a replacement failed to load the model)");
      for (const task of this.queue.splice(0)) task.reject(err);
    }
  }

  private post(slot: Slot, task: Task): void {
    const id = this.nextId++;
    const timeoutMs = this.options.timeoutMs;
    const deadline =
      timeoutMs > 0
        ? setTimeout(() => {
            const message = `inference run (${task.describe}) took longer than ${timeoutMs} ms (CLIPGUARD_INFERENCE_TIMEOUT_MS); its thread was replaced`;
            this.replace(slot, "timeout", new ClipguardError("CLIPGUARD_E_INFERENCE_TIMEOUT", message));
          }, timeoutMs).unref()
        : undefined;
    slot.busy = true;
    slot.running = { id, task, ...(deadline !== undefined ? { deadline } : {}) };
    slot.worker.postMessage(task.build(id), task.transfer);
  }

  private request(describe: string, build: (id: number) => InferenceRequest, transfer: ArrayBuffer[]): Promise<Float32Array[]> {
    if (this.closed) return Promise.reject(new ClipguardError("CLIPGUARD_E_SHUTDOWN", "the inference pool is closed"));
    // a replacement that failed to load is tried again when work arrives
    if (this.live.length + this.starting < this.options.threads) this.startReplacement();
    return new Promise((resolve, reject) => {
      this.queue.push({ describe, build, transfer, resolve, reject });
      this.dispatch();
    });
  }

  embedTexts(texts: readonly string[]): Promise<Float32Array[]> {
    if (texts.length === 0) return Promise.resolve([]);
    this.counters.textRuns++;
    this.counters.textsEmbedded += texts.length;
    return this.request(`${texts.length} texts`, (id) => ({ id, kind: "texts", texts: [...texts] }), []);
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
    return this.request(`${count} images`, (id) => ({ id, kind: "pixels", pixels, count }), [pixels.buffer as ArrayBuffer]);
  }

  /**
   * Fails queued and later requests (CLIPGUARD_E_SHUTDOWN), lets runs in flight finish (see the
   * class comment for why they are not cut short) and resolves once every thread has exited.
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const slot of [...this.live]) this.retire(slot);
    this.dispatch();
    await Promise.all([...this.threads].map((s) => s.exited));
  }
}
