/**
 * The moderation job processor.
 *
 * Job (queue CLIPGUARD_QUEUE, name `moderate`), data:
 *   { image: {url} | {base64} | {ref}, imageId?, policies?: string[], callbackUrl?, metadata? }
 *
 * Outcomes:
 *   - a verdict (allow / review / block) → job return value, one stream entry, the webhook; a
 *     `review` verdict also gets one entry in the review stream (CLIPGUARD_REVIEW_STREAM);
 *   - an animation is judged on up to CLIPGUARD_FRAMES_MAX frames (`frames` in the verdict, the
 *     deciding `frame` per policy); `tiles: true` policies also judge the tiles of a large image
 *     (`region` per policy when a tile decided); frames and tiles go to the image tower as one batch;
 *   - bad input (invalid job data, unknown policy, refused or undecodable image, refused URL)
 *     → an `error` verdict published the same three ways, and the job fails as unrecoverable;
 *   - transient faults (network, Redis, inference, webhook delivery) → the error is rethrown and
 *     BullMQ retries with the job's backoff; on the last attempt an `error` verdict is published;
 *   - the worker shutting down past its grace period before the image was judged
 *     (CLIPGUARD_E_SHUTDOWN) → nothing: the job is left active until the process exits, its lock
 *     expires and another worker runs it, without an attempt counted against it or a verdict.
 *
 * Error codes: CLIPGUARD_E_JOB_INVALID, _POLICY_UNKNOWN, _CONFIG (callback without a secret), the
 * image codes (_IMAGE_*, _BASE64, _REF_MISSING), the URL codes (_URL_*), _INFERENCE,
 * _INFERENCE_TIMEOUT, _REDIS, _WEBHOOK; _SHUTDOWN never reaches a verdict. The stream entries are written at most once per job id (see verdict-publisher.ts).
 */
import { UnrecoverableError, type Job } from "bullmq";
import type { Redis } from "ioredis";
import type { ImageModerator } from "../policies/image-moderator.js";
import { ClipguardError, isClipguardError, toErrorInfo } from "../shared/errors.js";
import { jobDataSchema, RELEASED_IMAGE, type JobData, type JobTimings, type JobVerdict } from "../shared/job-schema.js";
import type { Logger } from "../shared/logger.js";
import type { Verdict } from "../shared/verdict.js";
import { loadJobImage, type ImageSourceOptions } from "./image-source.js";
import type { WorkerMetrics } from "./metrics.js";
import type { VerdictPublisher } from "./verdict-publisher.js";
import { sendWebhook, type WebhookOptions } from "./webhook-sender.js";

export interface ProcessorDeps {
  redis: Redis;
  moderator: () => ImageModerator;
  publisher: VerdictPublisher;
  metrics: WorkerMetrics;
  logger: Logger;
  imageSource: ImageSourceOptions;
  /** Webhook settings; undefined when CLIPGUARD_WEBHOOK_SECRET is not set (callbacks are then refused). */
  webhook: Omit<WebhookOptions, "msgId"> | undefined;
}

function isLastAttempt(job: Job): boolean {
  return job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
}

function describeIssues(error: { issues: { path: PropertyKey[]; message: string }[] }): string {
  return error.issues.map((i) => `${i.path.map(String).join(".") || "(root)"}: ${i.message}`).join("; ");
}

/** The worker is exiting with the job unjudged: see CLIPGUARD_E_SHUTDOWN in the header. */
function isShutdown(code: string | undefined): boolean {
  return code === "CLIPGUARD_E_SHUTDOWN";
}

export function createJobProcessor(deps: ProcessorDeps) {
  const { metrics } = deps;

  /** Never settles: BullMQ must neither complete nor fail the job, so that it is retried elsewhere. */
  function abandon(job: Job): Promise<never> {
    deps.logger.info({ jobId: job.id }, "worker shutting down; the job is left for another worker (its lock expires)");
    return new Promise<never>(() => undefined);
  }

  async function finish(job: Job, data: Partial<JobData>, verdict: Verdict, timings: JobTimings): Promise<JobVerdict> {
    const jobVerdict: JobVerdict = {
      jobId: job.id ?? "",
      ...(data.imageId !== undefined ? { imageId: data.imageId } : {}),
      ...verdict,
      ...(data.metadata !== undefined ? { metadata: data.metadata } : {}),
      timings,
      createdAt: new Date().toISOString(),
    };
    // a re-run (a crash after publishing, a failed webhook) gets the verdict published first, so
    // that the stream, the webhook (same webhook-id, same body) and the return value agree
    const { added, verdict: published } = await deps.publisher.publish(jobVerdict);
    if (!added) deps.logger.info({ jobId: job.id }, "verdict already in the stream; not appended again");
    if (data.callbackUrl !== undefined && deps.webhook !== undefined) {
      await sendWebhook(data.callbackUrl, published, { ...deps.webhook, msgId: job.id ?? "" });
    }
    await releaseImage(job, data);
    metrics.jobsCompleted.inc({ decision: published.decision });
    for (const p of published.policies) metrics.policyDecisions.inc({ policy: p.id, decision: p.decision });
    metrics.stageSeconds.observe({ stage: "total" }, timings.totalMs / 1000);
    return published;
  }

  /**
   * No image bytes stay in Redis once the outcome is final: a `ref` key is deleted, and inline
   * base64 in the finished job's data (kept until CLIPGUARD_KEEP_COMPLETED/_FAILED trims the job)
   * is replaced by RELEASED_IMAGE, a ref that does not exist, as a deleted `ref` job's.
   */
  async function releaseImage(job: Job, data: Partial<JobData>): Promise<void> {
    if (data.image === undefined) return;
    if ("ref" in data.image) await deps.redis.del(data.image.ref);
    else if ("base64" in data.image) await job.updateData({ ...(job.data as object), image: RELEASED_IMAGE });
  }

  /** Publishes an error verdict when the failure is final, then fails the job the right way. */
  async function fail(job: Job, data: Partial<JobData>, err: unknown, timings: JobTimings, verdict?: Verdict): Promise<never> {
    const info = toErrorInfo(err);
    metrics.failures.inc({ code: info.code });
    const retryable = isClipguardError(err) ? err.retryable : true;
    if (retryable && !isLastAttempt(job)) throw err;
    await finish(job, data, verdict ?? deps.moderator().errorVerdict(err), timings);
    if (retryable) throw err;
    throw new UnrecoverableError(`${info.code}: ${info.message}`);
  }

  return async function process(job: Job): Promise<JobVerdict> {
    const started = Date.now();
    const timings: JobTimings = { queuedMs: Math.max(0, started - job.timestamp), fetchMs: 0, decodeMs: 0, inferenceMs: 0, totalMs: 0 };
    const log = deps.logger.child({ jobId: job.id });
    if (job.attemptsMade === 0) metrics.stageSeconds.observe({ stage: "queue" }, timings.queuedMs / 1000);

    const parsed = jobDataSchema.safeParse(job.data);
    if (!parsed.success) {
      const raw = (typeof job.data === "object" && job.data !== null ? job.data : {}) as Record<string, unknown>;
      // keep only what is safe to echo: a caller's id and metadata when they have the right shape
      const echo: Partial<JobData> = {
        ...(typeof raw["imageId"] === "string" ? { imageId: raw["imageId"] } : {}),
      };
      timings.totalMs = Date.now() - started;
      return fail(job, echo, new ClipguardError("CLIPGUARD_E_JOB_INVALID", `job data does not match the contract: ${describeIssues(parsed.error)}`), timings);
    }
    const data = parsed.data;
    let verdict: Verdict;
    try {
      if (data.callbackUrl !== undefined && deps.webhook === undefined) {
        throw new ClipguardError("CLIPGUARD_E_CONFIG", "the job has a callbackUrl but the worker has no CLIPGUARD_WEBHOOK_SECRET to sign webhooks with");
      }
      if (data.policies !== undefined) deps.moderator().assertPolicies(data.policies);
      const t0 = Date.now();
      const bytes = await loadJobImage(data.image, deps.redis, deps.imageSource);
      timings.fetchMs = Date.now() - t0;
      metrics.stageSeconds.observe({ stage: "fetch" }, timings.fetchMs / 1000);

      const moderated = await deps.moderator().moderate(bytes, data.policies !== undefined ? { policies: data.policies } : {});
      verdict = moderated.verdict;
      const stage = moderated.timings;
      timings.decodeMs = Math.round(stage.decodeMs * 100) / 100;
      timings.inferenceMs = Math.round(stage.inferenceMs * 100) / 100;
      if (verdict.decision !== "error") {
        metrics.framesPerImage.observe(stage.frames);
        metrics.tilesPerImage.observe(stage.tiles);
      }
      if (stage.embeddingCached) {
        metrics.imageCache.inc({ result: "hit" });
      } else if (stage.decodeMs > 0) {
        metrics.imageCache.inc({ result: "miss" });
        metrics.stageSeconds.observe({ stage: "decode" }, stage.decodeMs / 1000);
        if (stage.inferenceMs > 0) metrics.stageSeconds.observe({ stage: "inference" }, stage.inferenceMs / 1000);
      }
    } catch (err) {
      if (isShutdown(toErrorInfo(err).code)) return abandon(job);
      timings.totalMs = Date.now() - started;
      log.warn({ err, attempt: job.attemptsMade + 1 }, "job failed");
      return fail(job, data, err, timings);
    }
    timings.totalMs = Date.now() - started;
    if (verdict.decision === "error" && verdict.error !== undefined) {
      if (isShutdown(verdict.error.code)) return abandon(job);
      log.warn({ code: verdict.error.code, attempt: job.attemptsMade + 1 }, "image could not be judged");
      return fail(job, data, new ClipguardError(verdict.error.code, verdict.error.message), timings, verdict);
    }
    try {
      const result = await finish(job, data, verdict, timings);
      log.info({ decision: result.decision, policyVersion: result.policyVersion, totalMs: timings.totalMs }, "verdict published");
      return result;
    } catch (err) {
      // publishing or webhook delivery failed: retry the job (the stream entry is never duplicated),
      // unless retrying cannot help (a callback URL refused by the address rules)
      const info = toErrorInfo(err);
      metrics.failures.inc({ code: info.code });
      log.warn({ err, attempt: job.attemptsMade + 1 }, "publishing the verdict failed");
      if (isClipguardError(err) && !err.retryable) throw new UnrecoverableError(`${info.code}: ${info.message}`);
      throw err;
    }
  };
}
