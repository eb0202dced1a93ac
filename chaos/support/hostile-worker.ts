/**
 * One real `clipguard worker` (demo model) on a redis-server of its own, for the hostile-input,
 * SSRF and webhook scenarios: enqueue raw jobs (no client-side checks in the way), time each job
 * from enqueue to its verdict-stream entry, and sample the worker's RSS.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { Queue, type JobsOptions } from "bullmq";
import { Redis } from "ioredis";
import type { JobVerdict } from "../../src/shared/job-schema.js";
import { colourPolicies, tempDir } from "../../test/support/fixtures.js";
import { startWorker, type WorkerProcess } from "../../test/support/worker-process.js";
import { startRedisServer, type RedisServer } from "./redis-server.js";

/** The options the ModerationClient gives every job (attempts 5, exponential backoff from 1 s). */
export const CLIENT_JOB_OPTIONS: JobsOptions = { attempts: 5, backoff: { type: "exponential", delay: 1000 } };

export interface JobOutcome {
  jobId: string;
  verdict: JobVerdict;
  /** The job in the queue (queue.add resolved) to its verdict-stream entry, ms. */
  ms: number;
  /** queue.add itself (sending the job data to Redis), ms. */
  enqueueMs: number;
  /** From queue.add resolved to clipguard's processor starting (BullMQ fetching and parsing the job), ms. */
  pickupMs: number;
  /** BullMQ attemptsMade once the job settled. */
  attempts: number;
  state: string;
}

export interface HostileWorker {
  redisServer: RedisServer;
  redis: Redis;
  worker: WorkerProcess;
  queue: Queue;
  dir: string;
  stream: string;
  /** Enqueues `data` and waits for its verdict (and for the job to settle). */
  run(data: Record<string, unknown>, options?: JobsOptions, timeoutMs?: number): Promise<JobOutcome>;
  /** The worker's RSS now (clipguard_process_resident_memory_bytes), MiB. */
  rssMiB(): Promise<number>;
  /** Highest RSS sampled (every 100 ms since start and at every rssMiB() call), MiB. */
  peakRssMiB(): number;
  close(): Promise<void>;
}

/** Starts redis-server and the worker; `env` is added to the worker's environment. */
export async function startHostileWorker(env: Record<string, string> = {}): Promise<HostileWorker> {
  const redisServer = await startRedisServer();
  const dir = await tempDir("clipguard-chaos-hostile-");
  const policies = path.join(dir, "policies.yaml");
  await fs.writeFile(policies, colourPolicies("chaos"));
  const ns = "chaos-hostile";
  const stream = `${ns}:verdicts`;
  let worker: WorkerProcess;
  try {
    worker = await startWorker({
      REDIS_URL: redisServer.url,
      CLIPGUARD_QUEUE: ns,
      CLIPGUARD_VERDICT_STREAM: stream,
      CLIPGUARD_POLICIES: policies,
      CLIPGUARD_WATCH_POLICIES: "false",
      ...env,
    });
  } catch (err) {
    await redisServer.close();
    throw err;
  }
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  // BullMQ does not close a connection it was given
  const queueConnection = new Redis(redisServer.url, { maxRetriesPerRequest: null });
  const queue = new Queue(ns, { connection: queueConnection });

  // one reader of the verdict stream records when each job's entry arrived
  const arrivals = new Map<string, { at: number; verdict: JobVerdict }>();
  const reader = redis.duplicate();
  let reading = true;
  const readLoop = (async () => {
    let last = "0-0";
    while (reading) {
      const result = (await reader.xread("BLOCK", 100, "STREAMS", stream, last).catch(() => null)) as [string, [string, string[]][]][] | null;
      const at = Date.now();
      for (const [, entries] of result ?? []) {
        for (const [id, fields] of entries) {
          last = id;
          const get = (name: string) => fields[fields.indexOf(name) + 1];
          arrivals.set(get("jobId") ?? "", { at, verdict: JSON.parse(get("verdict") ?? "{}") as JobVerdict });
        }
      }
    }
  })();

  let peak = 0;
  const rssMiB = async () => {
    const bytes = (await worker.metric("clipguard_process_resident_memory_bytes")) ?? 0;
    peak = Math.max(peak, bytes / 2 ** 20);
    return bytes / 2 ** 20;
  };
  const sampler = setInterval(() => void rssMiB().catch(() => undefined), 100);
  let next = 0;

  return {
    redisServer,
    redis,
    worker,
    queue,
    dir,
    stream,
    rssMiB,
    peakRssMiB: () => peak,
    async run(data, options = CLIENT_JOB_OPTIONS, timeoutMs = 30_000) {
      const jobId = `chaos-${++next}-${Date.now()}`;
      const adding = Date.now();
      await queue.add("moderate", data, { ...options, jobId });
      const started = Date.now();
      const deadline = started + timeoutMs;
      while (!arrivals.has(jobId)) {
        if (Date.now() > deadline) throw new Error(`no verdict for ${jobId} within ${timeoutMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const arrival = arrivals.get(jobId)!;
      // the job settles right after its verdict (or is retried, for a retryable code)
      let job = await queue.getJob(jobId);
      let state = (await job?.getState()) ?? "unknown";
      while (state === "active" && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        state = (await job?.getState()) ?? "unknown";
      }
      job = await queue.getJob(jobId);
      const processorStart = (job?.timestamp ?? adding) + arrival.verdict.timings.queuedMs;
      return {
        jobId,
        verdict: arrival.verdict,
        ms: arrival.at - started,
        enqueueMs: started - adding,
        pickupMs: processorStart - started,
        attempts: job?.attemptsMade ?? -1,
        state,
      };
    },
    async close() {
      clearInterval(sampler);
      reading = false;
      await readLoop;
      await worker.stop("SIGTERM");
      await queue.close();
      queueConnection.disconnect();
      reader.disconnect();
      redis.disconnect();
      await redisServer.close();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
