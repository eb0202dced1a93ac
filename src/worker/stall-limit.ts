/**
 * How often a job may stall before it is given up, and what happens then.
 *
 * BullMQ counts a job as stalled when its lock expired while it was active: its worker was killed
 * (crash, OOM kill, SIGKILL after a grace period) or could not renew the lock. Past its own limit
 * (`maxStalledCount`, 1 by default) BullMQ fails such a job *without running the processor*, so
 * no verdict is published and no webhook sent: for everyone reading the verdict stream or waiting
 * for a callback the job is simply lost (found by the chaos suite's crash scenario: a job whose
 * worker was killed twice). So BullMQ is told to re-queue stalled jobs without limit, and the
 * worker applies CLIPGUARD_MAX_STALLS itself before processing: a job found stalled more often
 * (an image that crashes the worker, or bad luck) gets an `error` verdict with
 * CLIPGUARD_E_JOB_STALLED — published once, like any verdict, and sent to its callback — and
 * fails as unrecoverable (unless an earlier run had already published its verdict).
 */
import { UnrecoverableError, type Job } from "bullmq";
import type { Redis } from "ioredis";
import type { ImageModerator } from "../policies/image-moderator.js";
import { ClipguardError } from "../shared/errors.js";
import { jobDataSchema, type JobVerdict } from "../shared/job-schema.js";
import type { Logger } from "../shared/logger.js";
import type { WorkerMetrics } from "./metrics.js";
import type { VerdictPublisher } from "./verdict-publisher.js";
import { sendWebhook, type WebhookOptions } from "./webhook-sender.js";

/** BullMQ's own limit, set so high that it never fails a job behind the processor's back. */
export const BULLMQ_MAX_STALLED_COUNT = 1_000_000;

/** True when BullMQ found `job` stalled more than `maxStalls` times. */
export function stalledTooOften(job: Job, maxStalls: number): boolean {
  return job.stalledCounter > maxStalls;
}

export interface StallLimitDeps {
  redis: Redis;
  moderator: () => ImageModerator;
  publisher: VerdictPublisher;
  metrics: WorkerMetrics;
  logger: Logger;
  /** Webhook settings; undefined when CLIPGUARD_WEBHOOK_SECRET is not set. */
  webhook: Omit<WebhookOptions, "msgId"> | undefined;
}

/**
 * Settles a job that stalled too often without looking at its image (it may be what crashes the
 * worker). When an earlier run already published the job's verdict, that verdict stands: its
 * webhook is sent again (the same message) and the job completes with it (or fails with its
 * code, for an error verdict). Otherwise the
 * CLIPGUARD_E_JOB_STALLED error verdict is published and sent, and the job fails as
 * unrecoverable. A webhook that cannot be delivered throws CLIPGUARD_E_WEBHOOK instead, so BullMQ
 * retries the job; the next attempt lands here again and publishes nothing twice.
 */
export async function settleStalledJob(job: Job, maxStalls: number, deps: StallLimitDeps): Promise<JobVerdict> {
  const err = new ClipguardError(
    "CLIPGUARD_E_JOB_STALLED",
    `the job stalled ${job.stalledCounter} times (its worker was killed or lost the job's lock), more than CLIPGUARD_MAX_STALLS=${maxStalls}; it is not run again`,
  );
  const parsed = jobDataSchema.safeParse(job.data);
  const data = parsed.success ? parsed.data : undefined;
  const errorVerdict: JobVerdict = {
    jobId: job.id ?? "",
    ...(data?.imageId !== undefined ? { imageId: data.imageId } : {}),
    ...deps.moderator().errorVerdict(err),
    ...(data?.metadata !== undefined ? { metadata: data.metadata } : {}),
    timings: { queuedMs: Math.max(0, Date.now() - job.timestamp), fetchMs: 0, decodeMs: 0, inferenceMs: 0, totalMs: 0 },
    createdAt: new Date().toISOString(),
  };
  const { added, verdict } = await deps.publisher.publish(errorVerdict);
  deps.logger.warn(
    { jobId: job.id, stalls: job.stalledCounter, maxStalls, decision: verdict.decision, added },
    added ? "job stalled too often; error verdict published" : "job stalled too often; its verdict was already published",
  );
  if (data?.callbackUrl !== undefined && deps.webhook !== undefined) {
    await sendWebhook(data.callbackUrl, verdict, { ...deps.webhook, msgId: job.id ?? "" });
  }
  if (data !== undefined && "ref" in data.image) await deps.redis.del(data.image.ref);
  if (added) {
    deps.metrics.failures.inc({ code: err.code });
    deps.metrics.jobsCompleted.inc({ decision: "error" });
  } else if (verdict.decision !== "error") {
    return verdict;
  }
  const failure = verdict.error ?? { code: err.code, message: err.message };
  // worded like the processor's unrecoverable failures, which the client's job status parses
  throw new UnrecoverableError(`${failure.code}: ${failure.message}`);
}
