/**
 * `service`, `duplicate`, event-loop delay and RSS: one real `clipguard worker` process (dist/,
 * default settings) on its own queue and verdict stream; jobs are enqueued with clipguard's own
 * ModerationClient as `ref` jobs (bytes under clipguard:ref:<id>), and each verdict is timed when
 * it appears in the stream. Every job carries unique bytes (see withUniqueComment), except in the
 * duplicate phase, which re-submits bytes already judged.
 *
 * Order: warm-up → small images up to the second RSS checkpoint (throughput, event-loop delay,
 * RSS at both checkpoints) → duplicates of the last judged small images → large images.
 */
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { ModerationClient } from "../src/client/moderation-client.js";
import { withUniqueComment, type BenchImage } from "./images.js";
import { VerdictReader } from "./verdict-reader.js";
import { sample, startBenchWorker, type BenchWorker } from "./worker-process.js";

export interface ServiceResult {
  /** Size key → jobs/s. */
  jobsPerSecond: Record<string, number>;
  duplicateP50Ms: number;
  eventLoop: { p99Ms: number; maxP99Ms: number; medianP99Ms: number; windows: number };
  rss: { atJobs: [number, number]; bytes: [number, number]; growthRatio: number };
  /** Where the worker's time went during the small-image run (from its own metrics). */
  diagnostics: {
    /** Worker process CPU seconds per wall second (all its threads): 2 on 2 busy cores. */
    workerCpuCores: number;
    /** Mean milliseconds per job by stage (queue, fetch, decode, inference, total). */
    stageMeanMs: Record<string, number>;
    /** Mean images per image-tower run. */
    meanBatchSize: number;
    /**
     * CPU milliseconds per job during the small-image run, by process: the worker (all its
     * threads), redis-server, and this benchmark process (producer and verdict reader).
     */
    cpuMsPerJob: { worker: number; redis: number; producer: number };
  };
}

export interface ServiceOptions {
  redisUrl: string;
  modelDir: string;
  policiesFile: string;
  small: { key: string; images: readonly BenchImage[] };
  large: { key: string; images: readonly BenchImage[] };
  warmupJobs: number;
  largeJobs: number;
  rssCheckpoints: [number, number];
  window: { small: number; large: number };
  duplicateSamples: number;
  scrapeMs: number;
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

async function deleteNamespace(redisUrl: string, namespace: string): Promise<void> {
  const redis = new Redis(redisUrl);
  try {
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `*${namespace}*`, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== "0");
  } finally {
    redis.disconnect();
  }
}

/** redis-server's own CPU seconds (user + system, all its threads) from INFO cpu. */
async function redisCpuSeconds(redis: Redis): Promise<number> {
  const info = await redis.info("cpu");
  const field = (name: string) => Number(new RegExp(`^${name}:([0-9.]+)`, "m").exec(info)?.[1] ?? 0);
  return field("used_cpu_user") + field("used_cpu_sys");
}

function smallRunDiagnostics(before: string, after: string, seconds: number, jobs: number, otherCpuMs: { redis: number; producer: number }): ServiceResult["diagnostics"] {
  const delta = (name: string, labels: Record<string, string> = {}) => (sample(after, name, labels) ?? 0) - (sample(before, name, labels) ?? 0);
  const mean = (histogram: string, labels: Record<string, string> = {}) => {
    const count = delta(`${histogram}_count`, labels);
    return count > 0 ? delta(`${histogram}_sum`, labels) / count : 0;
  };
  const stageMeanMs: Record<string, number> = {};
  for (const stage of ["queue", "fetch", "decode", "inference", "total"]) {
    stageMeanMs[stage] = mean("clipguard_stage_duration_seconds", { stage }) * 1000;
  }
  return {
    workerCpuCores: delta("clipguard_process_cpu_seconds_total") / seconds,
    stageMeanMs,
    meanBatchSize: mean("clipguard_inference_batch_size"),
    cpuMsPerJob: {
      worker: (delta("clipguard_process_cpu_seconds_total") * 1000) / jobs,
      redis: otherCpuMs.redis / jobs,
      producer: otherCpuMs.producer / jobs,
    },
  };
}

export async function measureService(options: ServiceOptions, progress: (line: string) => void): Promise<ServiceResult> {
  const namespace = `clipguard-bench-${randomBytes(6).toString("hex")}`;
  const stream = `${namespace}:verdicts`;
  let worker: BenchWorker | undefined;
  const reader = new VerdictReader(options.redisUrl, stream);
  const client = new ModerationClient({ redis: options.redisUrl, queue: namespace, verdictStream: stream, refThresholdBytes: 0 });
  try {
    worker = await startBenchWorker({
      REDIS_URL: options.redisUrl,
      CLIPGUARD_MODEL_DIR: options.modelDir,
      CLIPGUARD_POLICIES: options.policiesFile,
      CLIPGUARD_QUEUE: namespace,
      CLIPGUARD_VERDICT_STREAM: stream,
      CLIPGUARD_WATCH_POLICIES: "false",
    });
    const running = worker;
    progress(`service: worker ready (queue ${namespace})`);

    /** Enqueues `bytes`, resolves with enqueue→verdict milliseconds; an error verdict throws. */
    const judge = async (bytes: Buffer): Promise<number> => {
      const started = performance.now();
      const jobId = await client.enqueue(bytes);
      const arrival = await reader.wait(jobId);
      if (arrival.decision === "error") throw new Error(`service: job ${jobId} got an error verdict: ${arrival.error ?? ""}`);
      return arrival.at - started;
    };
    /** Jobs first..last-1, at most `window` in flight; `afterEach` sees the number done. */
    const runJobs = async (first: number, last: number, window: number, bytesFor: (i: number) => Buffer, afterEach?: (done: number) => void) => {
      let next = first;
      let done = first;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: window }, async () => {
          while (next < last) {
            await judge(bytesFor(next++));
            afterEach?.(++done);
          }
        }),
      );
      return performance.now() - started;
    };
    // unique per run too: the worker's image-embedding cache in Redis outlives a run, and bytes
    // seen in an earlier run would be judged without inference
    const run = randomBytes(4).toString("hex");
    const smallBytes = (i: number) => withUniqueComment(options.small.images[i % options.small.images.length]!.bytes, `${run}-small-${i}`);
    const largeBytes = (i: number) => withUniqueComment(options.large.images[i % options.large.images.length]!.bytes, `${run}-large-${i}`);

    await runJobs(0, options.warmupJobs, options.window.small, smallBytes);
    progress(`service: ${options.warmupJobs} warm-up jobs done`);

    // small images: throughput over the whole run; /metrics scraped every scrapeMs (each scrape
    // resets prom-client's event-loop histogram, so each value is the p99 of one window)
    const [firstCheckpoint, lastCheckpoint] = options.rssCheckpoints;
    const p99s: number[] = [];
    const rss: number[] = [];
    const scrapes: Promise<void>[] = [];
    const before = await running.metricsText(); // also starts the first event-loop window
    const beforeAt = performance.now();
    const cpuProbe = new Redis(options.redisUrl);
    const redisCpuBefore = await redisCpuSeconds(cpuProbe);
    const producerCpuBefore = process.cpuUsage();
    let scraping = true;
    const scrapeLoop = (async () => {
      while (scraping) {
        await new Promise((resolve) => setTimeout(resolve, options.scrapeMs));
        if (scraping) p99s.push(await running.metric("clipguard_nodejs_eventloop_lag_p99_seconds"));
      }
    })();
    let lastReport = performance.now();
    const smallMs = await runJobs(options.warmupJobs, lastCheckpoint, options.window.small, smallBytes, (done) => {
      if (done === firstCheckpoint || done === lastCheckpoint) {
        const slot = done === firstCheckpoint ? 0 : 1;
        scrapes.push(running.metric("clipguard_process_resident_memory_bytes").then((bytes) => void (rss[slot] = bytes)));
      }
      if (performance.now() - lastReport > 10_000) {
        lastReport = performance.now();
        progress(`service: ${options.small.key}: ${done}/${lastCheckpoint} jobs`);
      }
    });
    scraping = false;
    await scrapeLoop;
    await Promise.all(scrapes);
    const after = await running.metricsText();
    const producerCpu = process.cpuUsage(producerCpuBefore);
    const redisCpuMs = ((await redisCpuSeconds(cpuProbe)) - redisCpuBefore) * 1000;
    cpuProbe.disconnect();
    const smallJobs = lastCheckpoint - options.warmupJobs;
    const diagnostics = smallRunDiagnostics(before, after, (performance.now() - beforeAt) / 1000, smallJobs, {
      redis: redisCpuMs,
      producer: (producerCpu.user + producerCpu.system) / 1000,
    });
    const jobsPerSecond: Record<string, number> = { [options.small.key]: (smallJobs * 1000) / smallMs };
    progress(`service: ${options.small.key}: ${jobsPerSecond[options.small.key]!.toFixed(2)} jobs/s (${smallJobs} jobs)`);
    p99s.push(sample(after, "clipguard_nodejs_eventloop_lag_p99_seconds") ?? 0);

    // duplicates: the most recently judged images again, one at a time on an idle worker
    const duplicates: number[] = [];
    for (let k = 0; k < options.duplicateSamples; k++) duplicates.push(await judge(smallBytes(lastCheckpoint - 1 - k)));
    const duplicateP50Ms = median(duplicates);
    progress(`service: duplicate: p50 ${duplicateP50Ms.toFixed(1)} ms (${duplicates.length} samples)`);

    const largeMs = await runJobs(0, options.largeJobs, options.window.large, largeBytes);
    jobsPerSecond[options.large.key] = (options.largeJobs * 1000) / largeMs;
    progress(`service: ${options.large.key}: ${jobsPerSecond[options.large.key]!.toFixed(2)} jobs/s (${options.largeJobs} jobs)`);

    const [rssFirst, rssLast] = rss as [number, number];
    return {
      jobsPerSecond,
      duplicateP50Ms,
      eventLoop: {
        // the worker's own histogram over its whole life (clipguard_event_loop_delay_seconds)
        p99Ms: (sample(after, "clipguard_event_loop_delay_seconds", { quantile: "0.99" }) ?? 0) * 1000,
        maxP99Ms: Math.max(...p99s) * 1000, medianP99Ms: median(p99s) * 1000, windows: p99s.length },
      rss: { atJobs: options.rssCheckpoints, bytes: [rssFirst, rssLast], growthRatio: rssLast / rssFirst },
      diagnostics,
    };
  } finally {
    await worker?.stop().catch((err: unknown) => progress(`service: stopping the worker: ${(err as Error).message}`));
    await client.close();
    await reader.close();
    await deleteNamespace(options.redisUrl, namespace);
  }
}
