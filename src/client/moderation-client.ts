import { randomBytes, randomUUID } from "node:crypto";
import { Queue, type JobsOptions } from "bullmq";
import { Redis } from "ioredis";
import { ClipguardError, isClipguardError } from "../shared/errors.js";
import { JOB_NAME, REF_PREFIX, jobDataSchema, type JobData, type JobImage, type JobVerdict } from "../shared/job-schema.js";
import { createProducerConnection } from "../shared/redis.js";
import { describeImage, isHttpUrl, resolveImage, type ImageInput } from "./image-input.js";
import type { EnqueueOptions, ModerationClientOptions, WaitOptions } from "./client-options.js";
import { readJobStatus, type ModerationJobStatus } from "./job-status.js";
import { disconnectSettled, redisError, whenReady } from "./redis-ready.js";
import { lastEntryId, publishedMarkerKey, readVerdictEntries, STREAM_ID, type ReadVerdictsOptions, type VerdictEntry } from "./verdict-stream.js";
import { VerdictWatcher } from "./verdict-watcher.js";

const JOB_ID = /^[A-Za-z0-9_.-]{1,128}$/;
const MAX_PRIORITY = 2_097_151;
/** How soon a wait's first look at the stream is retried when Redis was away. */
const RECHECK_MS = 500;

function invalid(message: string): ClipguardError {
  return new ClipguardError("CLIPGUARD_E_JOB_INVALID", message);
}

function describeIssues(error: { issues: { path: PropertyKey[]; message: string }[] }): string {
  return error.issues.map((i) => `${i.path.map(String).join(".") || "(root)"}: ${i.message}`).join("; ");
}

/**
 * The producer side of clipguard: enqueues moderation jobs for the workers and reads their verdicts.
 *
 * @example
 * const client = new ModerationClient({ redis: "redis://127.0.0.1:6379" });
 * const verdict = await client.enqueueAndWait("photo.jpg", { imageId: "photo-1" });
 * console.log(verdict.decision);
 * await client.close();
 */
export class ModerationClient {
  readonly queueName: string;
  readonly verdictStream: string;
  private readonly redis: Redis;
  private readonly ownsRedis: boolean;
  private readonly prefix: string;
  private queue: Queue<JobData, JobVerdict, string> | undefined;
  private readonly settings: Required<Omit<ModerationClientOptions, "redis" | "queue" | "prefix" | "verdictStream" | "onRedisError">>;
  private readonly onRedisError: (err: unknown) => void;
  private watcher: VerdictWatcher | undefined;
  private follower: Redis | undefined;
  private closed = false;

  constructor(options: ModerationClientOptions) {
    this.queueName = options.queue ?? "moderation";
    this.verdictStream = options.verdictStream ?? "clipguard:verdicts";
    this.onRedisError = options.onRedisError ?? (() => {});
    this.settings = {
      refThresholdBytes: options.refThresholdBytes ?? 256 * 1024,
      refTtlSeconds: options.refTtlSeconds ?? 3600,
      maxImageBytes: options.maxImageBytes ?? 20 * 1024 * 1024,
      attempts: options.attempts ?? 5,
      backoffDelayMs: options.backoffDelayMs ?? 1000,
      keepCompleted: options.keepCompleted ?? 1000,
      keepFailed: options.keepFailed ?? 5000,
      keepSeconds: options.keepSeconds ?? 7 * 24 * 3600,
      connectTimeoutMs: options.connectTimeoutMs ?? 5000,
    };
    if (typeof options.redis === "string") {
      this.redis = createProducerConnection(options.redis);
      this.redis.on("error", (err) => this.onRedisError(err));
      this.ownsRedis = true;
    } else {
      this.redis = options.redis;
      this.ownsRedis = false;
    }
    this.prefix = options.prefix ?? "bull";
  }

  /**
   * Enqueues one image and returns the job id. Byte inputs (files, Buffers, base64) larger than
   * `refThresholdBytes` are stored in Redis under a `clipguard:ref:` key with a TTL, so job data
   * stays small; the worker deletes the key once the verdict is published.
   *
   * @throws ClipguardError CLIPGUARD_E_JOB_INVALID (bad options), the image codes
   *   (_IMAGE_READ, _IMAGE_EMPTY, _IMAGE_TOO_LARGE, _BASE64, _URL_REFUSED), CLIPGUARD_E_REDIS.
   */
  async enqueue(image: ImageInput, options: EnqueueOptions = {}): Promise<string> {
    const jobId = options.jobId ?? randomUUID();
    if (!JOB_ID.test(jobId) || /^\d+$/.test(jobId)) {
      throw invalid(`jobId "${jobId}" must be 1-128 characters of [A-Za-z0-9_.-] and not only digits`);
    }
    if (options.priority !== undefined && !(Number.isInteger(options.priority) && options.priority >= 1 && options.priority <= MAX_PRIORITY)) {
      throw invalid(`priority must be an integer from 1 to ${MAX_PRIORITY}`);
    }
    // validate everything but the image before reading files or storing bytes
    const fields = {
      ...(options.imageId !== undefined ? { imageId: options.imageId } : {}),
      ...(options.policies !== undefined ? { policies: options.policies } : {}),
      ...(options.callbackUrl !== undefined ? { callbackUrl: options.callbackUrl } : {}),
      ...(options.metadata !== undefined ? { metadata: options.metadata } : {}),
    };
    const checked = jobDataSchema.omit({ image: true }).safeParse(fields);
    if (!checked.success) throw invalid(`invalid job options: ${describeIssues(checked.error)}`);
    if (options.callbackUrl !== undefined && !isHttpUrl(options.callbackUrl)) {
      throw new ClipguardError("CLIPGUARD_E_URL_REFUSED", "callbackUrl must be an absolute http:// or https:// URL");
    }
    const resolved = await resolveImage(image, this.settings.maxImageBytes);

    const queue = await this.jobQueue();
    // an idempotent resubmission must not store a second ref nobody will read
    if (options.jobId !== undefined && (await this.exists(jobId))) return jobId;

    let jobImage: JobImage;
    let ref: string | undefined;
    if ("url" in resolved) {
      jobImage = { url: resolved.url };
    } else if (resolved.bytes.length > this.settings.refThresholdBytes) {
      ref = `${REF_PREFIX}${randomBytes(18).toString("base64url")}`;
      await this.redisCall(() => this.redis.set(ref as string, resolved.bytes, "EX", this.settings.refTtlSeconds));
      jobImage = { ref };
    } else {
      jobImage = { base64: resolved.bytes.toString("base64") };
    }
    const data: JobData = { image: jobImage, ...checked.data };
    const jobOptions: JobsOptions = {
      jobId,
      attempts: this.settings.attempts,
      backoff: { type: "exponential", delay: this.settings.backoffDelayMs },
      removeOnComplete: { count: this.settings.keepCompleted, age: this.settings.keepSeconds },
      removeOnFail: { count: this.settings.keepFailed, age: this.settings.keepSeconds },
      ...(options.priority !== undefined ? { priority: options.priority } : {}),
    };
    try {
      await this.redisCall(() => queue.add(JOB_NAME, data, jobOptions));
    } catch (err) {
      if (ref !== undefined) await this.redis.del(ref).catch(() => 0);
      throw err;
    }
    if (ref !== undefined && options.jobId !== undefined) {
      // lost a race with a concurrent resubmission: BullMQ kept the other job, so this ref is unused
      const stored = await this.redisCall(() => queue.getJob(jobId));
      const storedImage = stored?.data.image;
      if (storedImage === undefined || !("ref" in storedImage) || storedImage.ref !== ref) await this.redis.del(ref).catch(() => 0);
    }
    return jobId;
  }

  /**
   * Enqueues one image and waits for its verdict. A job that failed still has an `error` verdict
   * (decision "error", with `error.code`), which is returned rather than thrown.
   *
   * @throws ClipguardError CLIPGUARD_E_WAIT_TIMEOUT when no verdict arrived within `timeoutMs`
   *   (the job stays queued; `getVerdict(jobId)` finds it later), and what `enqueue` throws.
   */
  async enqueueAndWait(image: ImageInput, options: EnqueueOptions = {}, wait: WaitOptions = {}): Promise<JobVerdict> {
    const timeoutMs = wait.timeoutMs ?? 30_000;
    const jobId = await this.enqueue(image, options);
    const verdict = await this.waitForVerdict(jobId, { timeoutMs });
    if (verdict === undefined) {
      throw new ClipguardError("CLIPGUARD_E_WAIT_TIMEOUT", `no verdict for job ${jobId} (${describeImage(image)}) within ${timeoutMs} ms`);
    }
    return verdict;
  }

  /**
   * Waits for the verdict of an enqueued job; undefined when `timeoutMs` passes first. Once the
   * wait has begun it rides out Redis going away and coming back within `timeoutMs`.
   *
   * @throws ClipguardError CLIPGUARD_E_REDIS when Redis cannot be reached as the wait begins.
   */
  async waitForVerdict(jobId: string, wait: WaitOptions = {}): Promise<JobVerdict | undefined> {
    const timeoutMs = wait.timeoutMs ?? 30_000;
    const watcher = this.verdictWatcher();
    await watcher.start();
    return new Promise<JobVerdict | undefined>((resolve, reject) => {
      let settled = false;
      let recheck: NodeJS.Timeout | undefined;
      const settle = (verdict: JobVerdict | undefined, err?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        clearTimeout(recheck);
        unwatch();
        if (err !== undefined) reject(err);
        else resolve(verdict);
      };
      const timer = setTimeout(() => settle(undefined), timeoutMs);
      const unwatch = watcher.watch(jobId, (verdict) => settle(verdict));
      // published before the watcher saw it? (the watch is registered first, so nothing is missed)
      const check = () =>
        this.getVerdict(jobId).then(
          (verdict) => {
            if (verdict !== undefined) settle(verdict);
          },
          (err: unknown) => {
            // Redis went away during the wait: the watcher reconnects by itself, and the check is
            // repeated until it gets through, so a restart of Redis does not fail a wait that
            // has time left (found by the chaos suite's Redis-restart scenario)
            if (isClipguardError(err) && err.code === "CLIPGUARD_E_REDIS" && !this.closed) {
              if (!settled) recheck = setTimeout(() => void check(), RECHECK_MS);
            } else {
              settle(undefined, err);
            }
          },
        );
      void check();
    });
  }

  /**
   * The verdict of a job: the entry the worker published to the verdict stream (the source of
   * truth, error verdicts included), else the completed job's return value, else, for a job that
   * failed without publishing (a worker that died mid-job too often), an error verdict built from
   * its failure reason. Undefined while the job is not finished, or when the id is unknown.
   */
  async getVerdict(jobId: string): Promise<JobVerdict | undefined> {
    return (await this.getStatus(jobId))?.verdict;
  }

  /** State and verdict of a job; undefined when neither the job nor its verdict exists. */
  async getStatus(jobId: string): Promise<ModerationJobStatus | undefined> {
    const queue = await this.jobQueue();
    return this.redisCall(() => readJobStatus(queue, this.redis, this.verdictStream, jobId));
  }

  /**
   * Entries of the verdict stream after `from` (exclusive; "0" for the start, "$" for only new
   * ones), oldest first. With `blockMs` it waits for new entries on a connection of its own.
   */
  async readVerdicts(from: string, options: ReadVerdictsOptions = {}): Promise<VerdictEntry[]> {
    if (!STREAM_ID.test(from)) throw invalid(`"${from}" is not a stream id (<ms>-<seq>, <ms>, 0 or $)`);
    let connection = this.redis;
    if (options.blockMs !== undefined) {
      this.follower ??= this.duplicateConnection();
      connection = this.follower;
    }
    await this.ready(connection);
    return this.redisCall(() => readVerdictEntries(connection, this.verdictStream, from, options), connection);
  }

  /** The id of the newest verdict stream entry (`0-0` when empty): a `from` for "only new ones". */
  async latestVerdictId(): Promise<string> {
    await this.ready();
    return this.redisCall(() => lastEntryId(this.redis, this.verdictStream));
  }

  /** Resolves when Redis answers a PING; throws CLIPGUARD_E_REDIS otherwise. */
  async ping(timeoutMs = this.settings.connectTimeoutMs): Promise<void> {
    await this.ready(this.redis, timeoutMs);
    await this.redisCall(() =>
      Promise.race([
        this.redis.ping(),
        new Promise((_, reject) => setTimeout(() => reject(new Error(`no PING reply within ${timeoutMs} ms`)), timeoutMs).unref()),
      ]),
    );
  }

  /** Closes the queue and the client's own connections (not an ioredis instance passed in). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.watcher?.close();
    if (this.follower !== undefined) await disconnectSettled(this.follower);
    if (this.queue !== undefined) {
      // let BullMQ finish its connection setup first: closing during it leaves a rejection unhandled
      await this.queue.waitUntilReady().catch(() => {});
      await this.queue.close().catch(() => {});
    }
    if (this.ownsRedis) await disconnectSettled(this.redis);
  }

  private async exists(jobId: string): Promise<boolean> {
    const queue = await this.jobQueue();
    return this.redisCall(async () => {
      if ((await queue.getJob(jobId)) !== undefined) return true;
      return (await this.redis.exists(publishedMarkerKey(this.verdictStream, jobId))) === 1;
    });
  }

  private verdictWatcher(): VerdictWatcher {
    if (this.closed) throw new ClipguardError("CLIPGUARD_E_INTERNAL", "the client is closed");
    this.watcher ??= new VerdictWatcher(this.duplicateConnection(), this.verdictStream, {
      connectTimeoutMs: this.settings.connectTimeoutMs,
      onError: this.onRedisError,
    });
    return this.watcher;
  }

  /** A connection for blocking reads, so they never hold up enqueueing. */
  private duplicateConnection(): Redis {
    const connection = this.redis.duplicate();
    connection.on("error", (err) => this.onRedisError(err));
    return connection;
  }

  /**
   * The BullMQ queue, created once Redis is reachable: BullMQ waits for a connection without a
   * time limit, and a Queue closed before its connection was ever ready leaks a rejection.
   */
  private async jobQueue(): Promise<Queue<JobData, JobVerdict, string>> {
    await this.ready();
    if (this.queue === undefined) {
      this.queue = new Queue<JobData, JobVerdict, string>(this.queueName, { connection: this.redis, prefix: this.prefix });
      // BullMQ re-emits connection errors; without a listener they would crash the process
      this.queue.on("error", (err) => this.onRedisError(err));
    }
    return this.queue;
  }

  private async ready(connection: Redis = this.redis, timeoutMs = this.settings.connectTimeoutMs): Promise<void> {
    if (this.closed) throw new ClipguardError("CLIPGUARD_E_INTERNAL", "the client is closed");
    await whenReady(connection, timeoutMs);
  }

  private async redisCall<T>(call: () => Promise<T>, connection: Redis = this.redis): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw isClipguardError(err) ? err : redisError(connection, err);
    }
  }
}
