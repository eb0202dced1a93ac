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
 *     BullMQ retries with the job's backoff; on the last attempt an `error` verdict is published.
 *
 * Error codes: CLIPGUARD_E_JOB_INVALID, _POLICY_UNKNOWN, _CONFIG (callback without a secret), the
 * image codes (_IMAGE_*, _BASE64, _REF_MISSING), the URL codes (_URL_*), _INFERENCE, _REDIS,
 * _WEBHOOK. The stream entries are written at most once per job id (see verdict-publisher.ts).
 */
import { UnrecoverableError, type Job } from "bullmq";
import type { Redis } from "ioredis";
import type { ImageModerator } from "../policies/image-moderator.js";
import { ClipguardError, isClipguardError, toErrorInfo } from "../shared/errors.js";
import { jobDataSchema, type JobData, type JobTimings, type JobVerdict } from "../shared/job-schema.js";
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

export function createJobProcessor(deps: ProcessorDeps) {
  const { metrics } = deps;

  async function finish(job: Job, data: Partial<JobData>, verdict: Verdict, timings: JobTimings): Promise<JobVerdict> {
    const jobVerdict: JobVerdict = {
      jobId: job.id ?? "",
      ...(data.imageId !== undefined ? { imageId: data.imageId } : {}),
      ...verdict,
      ...(data.metadata !== undefined ? { metadata: data.metadata } : {}),
      timings,
      createdAt: new Date().toISOString(),
    };
    const { added } = await deps.publisher.publish(jobVerdict);
    if (!added) deps.logger.info({ jobId: job.id }, "verdict already in the stream; not appended again");
    if (data.callbackUrl !== undefined && deps.webhook !== undefined) {
      await sendWebhook(data.callbackUrl, jobVerdict, { ...deps.webhook, msgId: job.id ?? "" });
    }
    if (data.image !== undefined && "ref" in data.image) await deps.redis.del(data.image.ref);
    metrics.jobsCompleted.inc({ decision: jobVerdict.decision });
    for (const p of jobVerdict.policies) metrics.policyDecisions.inc({ policy: p.id, decision: p.decision });
    metrics.stageSeconds.observe({ stage: "total" }, timings.totalMs / 1000);
    return jobVerdict;
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
      timings.totalMs = Date.now() - started;
      log.warn({ err, attempt: job.attemptsMade + 1 }, "job failed");
      return fail(job, data, err, timings);
    }
    timings.totalMs = Date.now() - started;
    if (verdict.decision === "error" && verdict.error !== undefined) {
      log.warn({ code: verdict.error.code, attempt: job.attemptsMade + 1 }, "image could not be judged");
      return fail(job, data, new ClipguardError(verdict.error.code, verdict.error.message), timings, verdict);
    }
    try {
      const result = await finish(job, data, verdict, timings);
      log.info({ decision: result.decision, policyVersion: result.policyVersion, totalMs: timings.totalMs }, "verdict published");
      return result;
    } catch (err) {
      // publishing or webhook delivery failed: retry the job (the stream entry is never duplicated)
      metrics.failures.inc({ code: toErrorInfo(err).code });
      log.warn({ err, attempt: job.attemptsMade + 1 }, "publishing the verdict failed");
      throw err;
    }
  };
}
