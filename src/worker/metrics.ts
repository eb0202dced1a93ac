import { monitorEventLoopDelay } from "node:perf_hooks";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { ERROR_CODES } from "../shared/errors.js";

const STAGE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Every metric the worker exports, all prefixed `clipguard_`, in one registry per process. */
export function createWorkerMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "clipguard_" });
  const registers = [registry];
  // over the whole life of the process, unlike prom-client's lag gauges that reset every scrape
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  let depthSource: (() => Promise<Record<string, number>>) | undefined;
  let oldestSource: (() => Promise<number | undefined>) | undefined;
  const metrics = {
    /** Where `clipguard_queue_jobs` reads the queue's job counts from at scrape time. */
    setQueueDepthSource(source: () => Promise<Record<string, number>>): void {
      depthSource = source;
    },
    /** Where `clipguard_queue_oldest_waiting_seconds` reads the oldest waiting job's enqueue time (ms). */
    setOldestWaitingSource(source: () => Promise<number | undefined>): void {
      oldestSource = source;
    },
    registry,
    jobsCompleted: new Counter({
      name: "clipguard_jobs_completed_total",
      help: "Jobs that produced a verdict, by decision (allow, review, block, error)",
      labelNames: ["decision"] as const,
      registers,
    }),
    policyDecisions: new Counter({
      name: "clipguard_policy_decisions_total",
      help: "Per-policy decisions",
      labelNames: ["policy", "decision"] as const,
      registers,
    }),
    failures: new Counter({
      name: "clipguard_job_failures_total",
      help: "Job failures by error code (retryable ones count once per attempt)",
      labelNames: ["code"] as const,
      registers,
    }),
    stageSeconds: new Histogram({
      name: "clipguard_stage_duration_seconds",
      help: "Latency per stage: queue (wait before a worker took the job), fetch, decode, inference, total",
      labelNames: ["stage"] as const,
      buckets: STAGE_BUCKETS,
      registers,
    }),
    batchSize: new Histogram({
      name: "clipguard_inference_batch_size",
      help: "Images per image-tower run",
      buckets: [1, 2, 4, 8, 16, 32, 64],
      registers,
    }),
    inferenceThreadRestarts: new Counter({
      name: "clipguard_inference_thread_restarts_total",
      help: "Inference threads replaced, by reason (timeout: a run passed CLIPGUARD_INFERENCE_TIMEOUT_MS and the thread was retired; exit: the thread died)",
      labelNames: ["reason"] as const,
      registers,
    }),
    lockRenewalFailures: new Counter({
      name: "clipguard_lock_renewal_failures_total",
      help: "Job locks this worker failed to renew in time (the job may run again elsewhere): a blocked event loop or a slow Redis",
      registers,
    }),
    stalledJobs: new Counter({
      name: "clipguard_jobs_stalled_total",
      help: "Jobs this worker's stalled-job check found without a lock and moved back to wait (their worker died or lost the lock)",
      registers,
    }),
    framesPerImage: new Histogram({
      name: "clipguard_frames_per_image",
      help: "Frames scored per judged image (1 for a still image; up to CLIPGUARD_FRAMES_MAX for an animation)",
      buckets: [1, 2, 4, 8, 16, 32, 64],
      registers,
    }),
    tilesPerImage: new Histogram({
      name: "clipguard_tiles_per_image",
      help: "Tiles scored per judged image, over all its frames (0 unless a tiles: true policy judged a large image)",
      buckets: [0, 1, 2, 4, 9, 16, 32, 64],
      registers,
    }),
    textCache: new Counter({
      name: "clipguard_text_embedding_cache_total",
      help: "Text-embedding cache lookups by result (hit, miss)",
      labelNames: ["result"] as const,
      registers,
    }),
    imageCache: new Counter({
      name: "clipguard_image_embedding_cache_total",
      help: "Image-embedding cache lookups by result (hit: a duplicate image judged without inference)",
      labelNames: ["result"] as const,
      registers,
    }),
    textEncoderRuns: new Counter({
      name: "clipguard_text_encoder_runs_total",
      help: "Runs of the text tower (0 on a worker whose prompts were all in the shared cache)",
      registers,
    }),
    queueDepth: new Gauge({
      name: "clipguard_queue_jobs",
      help: "Jobs in the queue by state",
      labelNames: ["state"] as const,
      registers,
      async collect() {
        if (depthSource === undefined) return;
        try {
          for (const [state, n] of Object.entries(await depthSource())) this.set({ state }, n);
        } catch {
          // Redis away: keep the last values; /readyz reports the outage
        }
      },
    }),
    oldestWaiting: new Gauge({
      name: "clipguard_queue_oldest_waiting_seconds",
      help: "Age of the oldest job waiting in the queue (0 when none waits)",
      registers,
      async collect() {
        if (oldestSource === undefined) return;
        try {
          const enqueuedAt = await oldestSource();
          this.set(enqueuedAt === undefined ? 0 : Math.max(0, (Date.now() - enqueuedAt) / 1000));
        } catch {
          // Redis away: keep the last value
        }
      },
    }),
    eventLoopDelay: new Gauge({
      name: "clipguard_event_loop_delay_seconds",
      help: "Event-loop delay quantiles since the process started (inference runs in threads, so this stays low under load)",
      labelNames: ["quantile"] as const,
      registers,
      collect() {
        for (const q of [0.5, 0.9, 0.99, 1]) {
          const ns = q === 1 ? loopDelay.max : loopDelay.percentile(q * 100);
          this.set({ quantile: String(q) }, Number.isFinite(ns) ? ns / 1e9 : 0);
        }
      },
    }),
    policyReloads: new Counter({
      name: "clipguard_policy_reloads_total",
      help: "Policy reloads by result (ok, failed)",
      labelNames: ["result"] as const,
      registers,
    }),
    policyVersion: new Gauge({
      name: "clipguard_policy_version_info",
      help: "The active policy version (value 1 on the active version's series)",
      labelNames: ["version"] as const,
      registers,
    }),
    modelInfo: new Gauge({
      name: "clipguard_model_info",
      help: "The loaded model (value 1)",
      labelNames: ["name", "fingerprint", "variant"] as const,
      registers,
    }),
  };
  // Counters with labels only appear at their first event, and rate()/increase() cannot see the
  // step from "no series" to the first value: start every known series at zero.
  for (const decision of ["allow", "review", "block", "error"]) metrics.jobsCompleted.inc({ decision }, 0);
  for (const result of ["hit", "miss"]) {
    metrics.textCache.inc({ result }, 0);
    metrics.imageCache.inc({ result }, 0);
  }
  for (const result of ["ok", "failed"]) metrics.policyReloads.inc({ result }, 0);
  for (const reason of ["timeout", "exit"]) metrics.inferenceThreadRestarts.inc({ reason }, 0);
  for (const stage of ["queue", "fetch", "decode", "inference", "total"]) metrics.stageSeconds.zero({ stage });
  for (const code of Object.keys(ERROR_CODES)) metrics.failures.inc({ code }, 0);
  return metrics;
}

export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;
