import { Queue, Worker } from "bullmq";
import { configureImageDecoding } from "../clip/image-decode.js";
import { InferencePool } from "../clip/inference-pool.js";
import { RedisImageEmbeddingCache } from "../policies/image-embedding-cache.js";
import { ImageModerator } from "../policies/image-moderator.js";
import { imageSamplingFromConfig } from "../policies/image-sampling.js";
import { RedisTextEmbeddingCache } from "../policies/redis-text-embedding-cache.js";
import type { Config } from "../shared/config.js";
import { ClipguardError } from "../shared/errors.js";
import { JOB_NAME } from "../shared/job-schema.js";
import type { Logger } from "../shared/logger.js";
import { createWorkerConnection } from "../shared/redis.js";
import { startHealthServer } from "./health-server.js";
import { createJobProcessor, type ProcessorDeps } from "./job-processor.js";
import { createWorkerMetrics } from "./metrics.js";
import { PolicyManager } from "./policy-manager.js";
import { watchPolicies } from "./policy-watcher.js";
import { checkRedisSettings } from "./redis-settings.js";
import { BULLMQ_MAX_STALLED_COUNT, settleStalledJob, stalledTooOften } from "./stall-limit.js";
import { VerdictPublisher } from "./verdict-publisher.js";

export interface WorkerSettings {
  modelDir: string;
  variant: string;
  policiesFile: string;
}

export interface RunningWorker {
  metricsPort: number;
  /** Stops taking jobs, lets in-flight ones finish within the grace period, closes everything. */
  shutdown(): Promise<void>;
}

function fetchSettings(config: Config): Pick<ProcessorDeps, "imageSource" | "webhook"> {
  const addressRules = { allowPrivateAddresses: config.CLIPGUARD_ALLOW_PRIVATE_URLS, allowedHosts: config.CLIPGUARD_ALLOWED_HOSTS };
  return {
    imageSource: {
      maxBytes: config.CLIPGUARD_MAX_IMAGE_BYTES,
      url: { timeoutMs: config.CLIPGUARD_FETCH_TIMEOUT_MS, maxRedirects: config.CLIPGUARD_FETCH_MAX_REDIRECTS, ...addressRules },
    },
    webhook:
      config.CLIPGUARD_WEBHOOK_SECRET === undefined
        ? undefined
        : {
            secret: config.CLIPGUARD_WEBHOOK_SECRET,
            timeoutMs: config.CLIPGUARD_WEBHOOK_TIMEOUT_MS,
            maxAttempts: config.CLIPGUARD_WEBHOOK_ATTEMPTS,
            backoffMs: 500,
            ...addressRules,
          },
  };
}

/** Resolves within `ms` or rejects, so a health check never hangs on a dead connection. */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error("timeout")), ms).unref())]);
}

/**
 * Starts a moderation worker: checks Redis, loads the model into inference threads, compiles the
 * policies (text embeddings through the shared Redis cache) before taking any job, then consumes
 * the queue and serves metrics and health.
 */
export async function startModerationWorker(config: Config, settings: WorkerSettings, logger: Logger): Promise<RunningWorker> {
  const redis = createWorkerConnection(config.REDIS_URL);
  redis.on("error", (err) => logger.warn({ err }, "redis connection error"));
  const metrics = createWorkerMetrics();
  configureImageDecoding({ threadsPerImage: config.CLIPGUARD_DECODE_THREADS });
  let pool: InferencePool | undefined;
  let policies: PolicyManager;
  try {
    await checkRedisSettings(redis, logger);
    pool = await InferencePool.start({
      modelDir: settings.modelDir,
      variant: settings.variant,
      threads: config.CLIPGUARD_INFERENCE_THREADS,
      intraOpThreads: config.CLIPGUARD_ORT_THREADS,
      maxBatch: config.CLIPGUARD_BATCH_MAX,
      maxBatchWaitMs: config.CLIPGUARD_BATCH_WAIT_MS,
      onImageBatch: (size) => metrics.batchSize.observe(size),
      timeoutMs: config.CLIPGUARD_INFERENCE_TIMEOUT_MS,
      onThreadReplaced: (reason, err) => {
        metrics.inferenceThreadRestarts.inc({ reason });
        logger.warn({ reason, err }, "inference thread replaced");
      },
      onReplacementFailed: (err) => logger.error({ err }, "replacement inference thread failed to load the model"),
    });
    const textCache = new RedisTextEmbeddingCache(redis, { ttlSeconds: config.CLIPGUARD_TEXT_CACHE_TTL_S });
    policies = await PolicyManager.start(settings.policiesFile, pool, textCache, metrics, logger);
  } catch (err) {
    await pool?.close();
    redis.disconnect();
    throw err;
  }
  const inference = pool;
  metrics.modelInfo.set({ name: inference.info.name, fingerprint: inference.info.fingerprint, variant: inference.info.variant }, 1);
  const imageCache = new RedisImageEmbeddingCache(redis, { ttlSeconds: config.CLIPGUARD_EMBEDDING_TTL });
  const limits = {
    maxBytes: config.CLIPGUARD_MAX_IMAGE_BYTES,
    maxPixels: config.CLIPGUARD_MAX_PIXELS,
    fastShrinkOnLoad: config.CLIPGUARD_FAST_JPEG,
  };
  const moderator = new ImageModerator(inference, () => policies.current, limits, imageCache, {
    ...imageSamplingFromConfig(config),
    decodeConcurrency: config.CLIPGUARD_DECODE_CONCURRENCY,
  });
  const stopWatching = watchPolicies(settings.policiesFile, (reason) => void policies.reload(reason), {
    watchFile: config.CLIPGUARD_WATCH_POLICIES,
  });

  // BullMQ does not close connections it was given: they are disconnected on shutdown below
  const queueConnection = createWorkerConnection(config.REDIS_URL);
  const workerConnection = createWorkerConnection(config.REDIS_URL);
  const queue = new Queue(config.CLIPGUARD_QUEUE, { connection: queueConnection, prefix: config.CLIPGUARD_PREFIX });
  metrics.setQueueDepthSource(() => queue.getJobCounts("waiting", "active", "delayed", "failed", "prioritized"));
  metrics.setOldestWaitingSource(async () => (await queue.getJobs(["wait", "prioritized"], 0, 0, true))[0]?.timestamp);

  const jobDeps = {
    redis,
    moderator: () => moderator,
    publisher: new VerdictPublisher(redis, {
      stream: config.CLIPGUARD_VERDICT_STREAM,
      reviewStream: config.CLIPGUARD_REVIEW_STREAM,
      maxLen: config.CLIPGUARD_VERDICT_STREAM_MAXLEN,
    }),
    metrics,
    logger,
    ...fetchSettings(config),
  };
  const processor = createJobProcessor(jobDeps);
  const worker = new Worker(
    config.CLIPGUARD_QUEUE,
    async (job) => {
      if (job.name !== JOB_NAME) {
        throw new ClipguardError("CLIPGUARD_E_JOB_INVALID", `unknown job name "${job.name}"; clipguard jobs are named "${JOB_NAME}"`);
      }
      if (stalledTooOften(job, config.CLIPGUARD_MAX_STALLS)) return settleStalledJob(job, config.CLIPGUARD_MAX_STALLS, jobDeps);
      return processor(job);
    },
    {
      connection: workerConnection,
      prefix: config.CLIPGUARD_PREFIX,
      concurrency: config.CLIPGUARD_CONCURRENCY,
      lockDuration: config.CLIPGUARD_LOCK_DURATION_MS,
      stalledInterval: config.CLIPGUARD_STALLED_INTERVAL_MS,
      // CLIPGUARD_MAX_STALLS is applied above, so a job that stalled too often still gets a verdict
      maxStalledCount: BULLMQ_MAX_STALLED_COUNT,
      removeOnComplete: { count: config.CLIPGUARD_KEEP_COMPLETED },
      removeOnFail: { count: config.CLIPGUARD_KEEP_FAILED },
    },
  );
  worker.on("error", (err) => logger.error({ err }, "worker error"));
  worker.on("lockRenewalFailed", (jobIds) => metrics.lockRenewalFailures.inc(jobIds.length));
  worker.on("stalled", (jobId) => {
    metrics.stalledJobs.inc();
    logger.warn({ jobId }, "stalled job moved back to wait (its worker died or lost the lock)");
  });

  const health = await startHealthServer({
    host: config.CLIPGUARD_METRICS_HOST,
    port: config.CLIPGUARD_METRICS_PORT,
    registry: metrics.registry,
    readiness: async () => {
      const problems: string[] = [];
      await within(redis.ping(), 1000).catch(() => problems.push("redis unreachable"));
      if (!worker.isRunning()) problems.push("worker not running");
      return problems;
    },
  });
  logger.info(
    { queue: config.CLIPGUARD_QUEUE, metricsPort: health.port, model: inference.info, policyVersion: policies.current.version },
    "worker ready",
  );

  return {
    metricsPort: health.port,
    async shutdown() {
      stopWatching();
      const graceMs = config.CLIPGUARD_SHUTDOWN_GRACE_MS;
      const finished = await within(worker.close().then(() => true), graceMs).catch(() => false);
      if (!finished) {
        logger.warn({ graceMs }, "grace period over; closing with jobs in flight (their locks expire and they are retried)");
        // not worker.close(true): BullMQ hands back the close already under way, which waits for
        // the jobs. The jobs left behind stay active until the process exits: their runs in flight
        // finish (inference.close() waits for them), the rest end with CLIPGUARD_E_SHUTDOWN, which
        // the job processor leaves unsettled, so that they are retried elsewhere and not failed
      }
      await policies.settled();
      await Promise.allSettled([queue.close(), health.server.close(), inference.close()]);
      for (const connection of [redis, queueConnection, workerConnection]) connection.disconnect();
    },
  };
}
