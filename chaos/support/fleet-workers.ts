/**
 * A small fleet of real `clipguard worker` processes for the crash and Redis-restart scenarios:
 * slots that can be SIGKILLed and restarted, the logs of every generation of every slot, and the
 * peak resident memory seen on the workers' /metrics (`clipguard_process_resident_memory_bytes`).
 */
import { startWorker, type WorkerProcess } from "../../test/support/worker-process.js";

export interface FleetOptions {
  /** Worker processes kept running. */
  size: number;
  /** The workers' environment (REDIS_URL, queue, stream, policies, …). */
  env: Record<string, string>;
  /** How often each worker's RSS is sampled. @default 500 */
  rssSampleMs?: number;
}

export interface Fleet {
  /** The worker currently in each slot (undefined while it is down). */
  readonly slots: readonly (WorkerProcess | undefined)[];
  /** SIGKILLs the worker in `slot` and waits for its exit. */
  kill(slot: number): Promise<void>;
  /** Starts a worker in `slot` and waits until it logs "worker ready"; returns the time taken (ms). */
  start(slot: number): Promise<number>;
  /** Every parsed log line of every worker this fleet ever ran. */
  logs(): Record<string, unknown>[];
  /** Highest RSS sampled on any worker so far, in bytes (0 before the first sample). */
  peakRssBytes(): number;
  /** Counts of processes started and killed. */
  counts(): { started: number; killed: number };
  /** Stops every worker (SIGTERM, then SIGKILL after `graceMs`) and the sampler; returns their exit codes. */
  close(graceMs?: number): Promise<(number | null)[]>;
}

const RSS_METRIC = "clipguard_process_resident_memory_bytes";

export async function startFleet(options: FleetOptions): Promise<Fleet> {
  const slots: (WorkerProcess | undefined)[] = Array.from({ length: options.size }, () => undefined);
  const generations: WorkerProcess[] = [];
  let peak = 0;
  let started = 0;
  let killed = 0;

  const sample = async () => {
    await Promise.all(
      slots.map(async (worker) => {
        if (worker === undefined) return;
        // a worker being killed does not answer: that sample is simply skipped
        const rss = await worker.metric(RSS_METRIC).catch(() => undefined);
        if (rss !== undefined && rss > peak) peak = rss;
      }),
    );
  };
  let sampling = false;
  const sampler = setInterval(() => {
    if (sampling) return;
    sampling = true;
    void sample().finally(() => (sampling = false));
  }, options.rssSampleMs ?? 500);

  const start = async (slot: number): Promise<number> => {
    const t0 = Date.now();
    const worker = await startWorker(options.env);
    generations.push(worker);
    slots[slot] = worker;
    started++;
    return Date.now() - t0;
  };
  const kill = async (slot: number): Promise<void> => {
    const worker = slots[slot];
    if (worker === undefined) return;
    slots[slot] = undefined;
    await worker.stop("SIGKILL");
    killed++;
  };

  try {
    await Promise.all(slots.map((_, slot) => start(slot)));
  } catch (err) {
    clearInterval(sampler);
    await Promise.all(generations.map((w) => w.stop("SIGKILL")));
    throw err;
  }
  await sample();

  return {
    slots,
    kill,
    start,
    logs: () => generations.flatMap((w) => w.logs),
    peakRssBytes: () => peak,
    counts: () => ({ started, killed }),
    async close(graceMs = 15_000) {
      clearInterval(sampler);
      await sample();
      const running = slots.filter((w): w is WorkerProcess => w !== undefined);
      slots.fill(undefined);
      return Promise.all(
        running.map(async (worker) => {
          const timer = setTimeout(() => worker.child.kill("SIGKILL"), graceMs);
          try {
            return await worker.stop("SIGTERM");
          } finally {
            clearTimeout(timer);
          }
        }),
      );
    },
  };
}

/** Log lines with `msg`, counted per `jobId`. */
export function countLogsByJob(logs: Record<string, unknown>[], msg: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of logs) {
    if (line["msg"] !== msg || typeof line["jobId"] !== "string") continue;
    counts.set(line["jobId"], (counts.get(line["jobId"]) ?? 0) + 1);
  }
  return counts;
}

/** Resolves once `probe` returns a value other than undefined, or throws after `timeoutMs`. */
export async function until<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
