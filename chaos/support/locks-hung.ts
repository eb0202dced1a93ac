/**
 * The hung-inference case of the shutdown scenario: a worker whose inference deadline
 * (CLIPGUARD_INFERENCE_TIMEOUT_MS) sits far between a one-image run and a 64-image run of the
 * ViT-B/32 benchmark model, a job whose run passes it on every attempt (a 64-frame GIF is one
 * 64-crop run with CLIPGUARD_FRAMES_MAX=64), and a normal job after it.
 */
import type { Queue } from "bullmq";
import sharp from "sharp";
import { ModerationClient } from "../../src/client/moderation-client.js";
import type { JobVerdict } from "../../src/shared/job-schema.js";
import type { JobLedger } from "./locks-jobs.js";
import { startChaosWorker, type ChaosWorker, type StopResult } from "./locks-worker.js";

/**
 * Above a one-image run on a loaded 2-core machine (~0.1–0.5 s), well below a 64-image run on an
 * idle one: 2 s was not enough on a fast day (64 images in 1.9 s, ~34 images/s at that batch size).
 */
export const HUNG_TIMEOUT_MS = 800;
export const HUNG_FRAMES = 64;

export interface HungResult {
  verdict: JobVerdict | undefined;
  state: string;
  attemptsMade: number;
  /** Enqueue to the error verdict. */
  msToVerdict: number;
  restartsTimeout: number;
  restartsExit: number;
  replacedLogLines: number;
  /** The normal job after it. */
  next: JobVerdict | undefined;
  nextMs: number;
  aliveBeforeStop: boolean;
  stop: StopResult;
  peakRssMiB: number;
}

/** A GIF of `count` distinct small frames; `tag` makes its bytes unique to the run. */
async function animation(count: number, tag: number): Promise<Buffer> {
  const frames = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      sharp({ create: { width: 64, height: 48, channels: 3, background: { r: (i * 4) % 256, g: tag % 256, b: 255 - ((i * 4) % 256) } } })
        .png()
        .toBuffer(),
    ),
  );
  return sharp(frames, { join: { animated: true } }).gif({ delay: Array<number>(count).fill(80) }).toBuffer();
}

async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The worker of the case; started apart, so that it can load its model while other work goes on. */
export function startHungWorker(env: Record<string, string>): Promise<ChaosWorker> {
  return startChaosWorker("hung", { ...env, CLIPGUARD_INFERENCE_TIMEOUT_MS: String(HUNG_TIMEOUT_MS), CLIPGUARD_FRAMES_MAX: String(HUNG_FRAMES) });
}

/** Runs the case on `worker` (from startHungWorker, on the queue of `ledger` and `queue`) and stops it. */
export async function runHungCase(
  worker: ChaosWorker,
  redisUrl: string,
  ledger: JobLedger,
  queue: Queue,
  options: { graceMs: number; attempts: number },
): Promise<HungResult> {
  const producer = new ModerationClient({ redis: redisUrl, queue: ledger.queue, verdictStream: `${ledger.queue}:verdicts`, attempts: options.attempts, backoffDelayMs: 100 });
  try {
    const verdictOf = async (jobId: string) => (await ledger.verdicts()).get(jobId)?.[0];
    const t0 = Date.now();
    const hungId = await producer.enqueue(await animation(HUNG_FRAMES, t0 % 251));
    const verdict = await waitFor(() => verdictOf(hungId), 180_000, "the hung job's verdict");
    const msToVerdict = Date.now() - t0;
    const job = await waitFor(async () => {
      const j = await queue.getJob(hungId);
      return j?.finishedOn !== undefined ? j : undefined;
    }, 30_000, "the hung job to be failed");

    const t1 = Date.now();
    const nextId = await producer.enqueue(ledger.uniqueJpeg());
    const next = await waitFor(() => verdictOf(nextId), 120_000, "the normal job's verdict after the hung one");
    const nextMs = Date.now() - t1;
    const restartsTimeout = (await worker.metric("clipguard_inference_thread_restarts_total", { reason: "timeout" })) ?? -1;
    const restartsExit = (await worker.metric("clipguard_inference_thread_restarts_total", { reason: "exit" })) ?? -1;
    const aliveBeforeStop = worker.child.exitCode === null && worker.child.signalCode === null;
    const peakRssMiB = worker.peakRssMiB();
    const stop = await worker.stop("SIGTERM", options.graceMs + 30_000);
    return {
      verdict,
      state: await job.getState(),
      attemptsMade: job.attemptsMade,
      msToVerdict,
      restartsTimeout,
      restartsExit,
      replacedLogLines: worker.logs.filter((l) => l["msg"] === "inference thread replaced").length,
      next,
      nextMs,
      aliveBeforeStop,
      stop,
      peakRssMiB,
    };
  } finally {
    await producer.close();
    await worker.stop("SIGKILL");
  }
}
