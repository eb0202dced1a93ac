import { Queue, Worker } from "bullmq";
import type { Redis } from "ioredis";
import { InferencePool } from "../clip/inference-pool.js";
import { compilePolicies, loadPolicyFile, type CompiledPolicySet } from "../policies/index.js";
import { ImageModerator } from "../policies/image-moderator.js";
import { RedisTextEmbeddingCache } from "../policies/redis-text-embedding-cache.js";
import type { Config } from "../shared/config.js";
import { ClipguardError } from "../shared/errors.js";
import { JOB_NAME } from "../shared/job-schema.js";
import type { Logger } from "../shared/logger.js";
import { createWorkerConnection } from "../shared/redis.js";
import { startHealthServer } from "./health-server.js";
import { createJobProcessor } from "./job-processor.js";
import { createWorkerMetrics } from "./metrics.js";
import { watchPolicies } from "./policy-watcher.js";
import { checkRedisSettings } from "./redis-settings.js";
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

/**
 * Starts a moderation worker: loads the model into inference threads, compiles the policies
 * (text embeddings through the shared Redis cache) before taking any job, then consumes the queue.
 */
export async function startModerationWorker(config: Config, settings: WorkerSettings, logger: Logger): Promise<RunningWorker> {
  const redis: Redis = createWorkerConnection(config.REDIS_URL);
  redis.on("error", (err) => logger.warn({ err }, "redis connection error"));
  const metrics = createWorkerMetrics();
  let pool: InferencePool | undefined;
  try {
    await checkRedisSettings(redis, logger);
    const policySet = await loadPolicyFile(settings.policiesFile);
    pool = await InferencePool.start({
      modelDir: settings.modelDir,
      variant: settings.variant,
      threads: config.CLIPGUARD_INFERENCE_THREADS,
      intraOpThreads: config.CLIPGUARD_ORT_THREADS,
    });
  const inference = pool;
  metrics.modelInfo.set({ name: inference.info.name, fingerprint: inference.info.fingerprint, variant: inference.info.variant }, 1);
  const textCache = new RedisTextEmbeddingCache(redis, { ttlSeconds: config.CLIPGUARD_TEXT_CACHE_TTL_S });

  /** Compiles a policy set and moves the cache and encoder counters by what it cost. */
  const compile = async (set: Awaited<ReturnType<typeof loadPolicyFile>>): Promise<CompiledPolicySet> => {
    const before = { ...textCache.stats(), runs: inference.counters.textRuns };
    const compiled = await compilePolicies(set, inference, textCache);
    const after = textCache.stats();
    metrics.textCache.inc({ result: "hit" }, after.hits - before.hits);
    metrics.textCache.inc({ result: "miss" }, after.misses - before.misses);
    metrics.textEncoderRuns.inc(inference.counters.textRuns - before.runs);
    return compiled;
  };
  let current = await compile(policySet);
  metrics.policyVersion.set({ version: current.version }, 1);
  const moderator = () => new ImageModerator(inference, () => current, { maxBytes: config.CLIPGUARD_MAX_IMAGE_BYTES, maxPixels: config.CLIPGUARD_MAX_PIXELS });
  let activeModerator = moderator();

  let reloading = Promise.resolve();
  const reload = (reason: string) => {
    reloading = reloading.then(async () => {
      try {
        const next = await compile(await loadPolicyFile(settings.policiesFile));
        if (next.version !== current.version) {
          metrics.policyVersion.reset();
          metrics.policyVersion.set({ version: next.version }, 1);
        }
        current = next;
        activeModerator = moderator();
        metrics.policyReloads.inc({ result: "ok" });
        logger.info({ reason, policyVersion: next.version, policies: next.policies.length }, "policies reloaded");
      } catch (err) {
        metrics.policyReloads.inc({ result: "failed" });
        logger.error({ reason, err, policyVersion: current.version }, "policies reload failed; keeping the running set");
      }
    });
  };
  const stopWatching = watchPolicies(settings.policiesFile, (reason) => reload(reason), { watchFile: config.CLIPGUARD_WATCH_POLICIES });

  const connectionOptions = { prefix: config.CLIPGUARD_PREFIX };
  const queue = new Queue(config.CLIPGUARD_QUEUE, { connection: createWorkerConnection(config.REDIS_URL), ...connectionOptions });
  metrics.setQueueDepthSource(() => queue.getJobCounts("waiting", "active", "delayed", "failed", "prioritized"));

  const processor = createJobProcessor({
    redis,
    moderator: () => activeModerator,
    publisher: new VerdictPublisher(redis, { stream: config.CLIPGUARD_VERDICT_STREAM, maxLen: config.CLIPGUARD_VERDICT_STREAM_MAXLEN }),
    metrics,
    logger,
    imageSource: {
      maxBytes: config.CLIPGUARD_MAX_IMAGE_BYTES,
      url: {
        timeoutMs: config.CLIPGUARD_FETCH_TIMEOUT_MS,
        maxRedirects: config.CLIPGUARD_FETCH_MAX_REDIRECTS,
        allowPrivateAddresses: config.CLIPGUARD_ALLOW_PRIVATE_URLS,
        allowedHosts: config.CLIPGUARD_ALLOWED_HOSTS,
      },
    },
    webhook:
      config.CLIPGUARD_WEBHOOK_SECRET === undefined
        ? undefined
        : {
            secret: config.CLIPGUARD_WEBHOOK_SECRET,
            timeoutMs: config.CLIPGUARD_WEBHOOK_TIMEOUT_MS,
            maxAttempts: config.CLIPGUARD_WEBHOOK_ATTEMPTS,
            backoffMs: 500,
            allowPrivateAddresses: config.CLIPGUARD_ALLOW_PRIVATE_URLS,
            allowedHosts: config.CLIPGUARD_ALLOWED_HOSTS,
          },
  });

  const worker = new Worker(
    config.CLIPGUARD_QUEUE,
    async (job) => {
      if (job.name !== JOB_NAME) {
        throw new ClipguardError("CLIPGUARD_E_JOB_INVALID", `unknown job name "${job.name}"; clipguard jobs are named "${JOB_NAME}"`);
      }
      return processor(job);
    },
    {
      connection: createWorkerConnection(config.REDIS_URL),
      ...connectionOptions,
      concurrency: config.CLIPGUARD_CONCURRENCY,
      lockDuration: config.CLIPGUARD_LOCK_DURATION_MS,
      stalledInterval: config.CLIPGUARD_STALLED_INTERVAL_MS,
      removeOnComplete: { count: config.CLIPGUARD_KEEP_COMPLETED },
      removeOnFail: { count: config.CLIPGUARD_KEEP_FAILED },
    },
  );
  worker.on("error", (err) => logger.error({ err }, "worker error"));

  const health = await startHealthServer({
    host: config.CLIPGUARD_METRICS_HOST,
    port: config.CLIPGUARD_METRICS_PORT,
    registry: metrics.registry,
    readiness: async () => {
      const problems: string[] = [];
      try {
        await Promise.race([redis.ping(), new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 1000))]);
      } catch {
        problems.push("redis unreachable");
      }
      if (!worker.isRunning()) problems.push("worker not running");
      return problems;
    },
  });
  logger.info({ queue: config.CLIPGUARD_QUEUE, metricsPort: health.port, model: inference.info, policyVersion: current.version }, "worker ready");

  return {
    metricsPort: health.port,
    async shutdown() {
      stopWatching();
      const graceful = worker.close();
      const timedOut = await Promise.race([
        graceful.then(() => false),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(true), config.CLIPGUARD_SHUTDOWN_GRACE_MS).unref()),
      ]);
      if (timedOut) {
        logger.warn({ graceMs: config.CLIPGUARD_SHUTDOWN_GRACE_MS }, "grace period over; closing with jobs in flight (they will be retried)");
        await worker.close(true);
      }
      await reloading;
      await Promise.allSettled([queue.close(), health.server.close(), inference.close()]);
      redis.disconnect();
    },
  };
  } catch (err) {
    await pool?.close();
    redis.disconnect();
    throw err;
  }
}
