import type { Queue } from "bullmq";
import type { Redis } from "ioredis";
import { ERROR_CODES, type ErrorCode } from "../shared/errors.js";
import type { JobData, JobVerdict } from "../shared/job-schema.js";
import { findPublishedVerdict } from "./verdict-stream.js";

/** BullMQ job states a moderation job can be in. */
export type ModerationJobState = "waiting" | "prioritized" | "delayed" | "active" | "waiting-children" | "completed" | "failed";

export interface ModerationJobStatus {
  state: ModerationJobState;
  /** The verdict once published (it can be published while the job is still `active` sending its webhook). */
  verdict: JobVerdict | undefined;
}

/** How the job processor words an unrecoverable failure: `<code>: <message>`. */
const UNRECOVERABLE_REASON = /^(CLIPGUARD_E_[A-Z0-9_]+): ([\s\S]*)$/;

/**
 * An error verdict for a job that failed without publishing one (its worker died mid-job more
 * often than BullMQ's stalled limit, say): code and message from the failure reason, no model.
 */
function failedJobVerdict(jobId: string, data: Partial<JobData>, failedReason: string | undefined, finishedOn: number | undefined): JobVerdict {
  const match = UNRECOVERABLE_REASON.exec(failedReason ?? "");
  const code: ErrorCode = match?.[1] !== undefined && match[1] in ERROR_CODES ? (match[1] as ErrorCode) : "CLIPGUARD_E_INTERNAL";
  return {
    jobId,
    ...(data.imageId !== undefined ? { imageId: data.imageId } : {}),
    decision: "error",
    policies: [],
    model: { name: "", fingerprint: "" },
    policyVersion: "",
    error: { code, message: match?.[2] ?? (failedReason || "the job failed") },
    ...(data.metadata !== undefined ? { metadata: data.metadata } : {}),
    timings: { queuedMs: 0, fetchMs: 0, decodeMs: 0, inferenceMs: 0, totalMs: 0 },
    createdAt: new Date(finishedOn ?? Date.now()).toISOString(),
  };
}

/**
 * State and verdict of a job. The verdict comes from the stream entry the worker published (the
 * source of truth, error verdicts included), else from the completed job's return value, else,
 * for a failed job, from its failure reason. Undefined when neither job nor verdict exists.
 */
export async function readJobStatus(
  queue: Queue<JobData, JobVerdict, string>,
  redis: Redis,
  stream: string,
  jobId: string,
): Promise<ModerationJobStatus | undefined> {
  const published = await findPublishedVerdict(redis, stream, jobId);
  // state before data: the job hash read second is at least as new as the state
  const state = await queue.getJobState(jobId);
  const job = state === "unknown" ? undefined : await queue.getJob(jobId);
  if (job === undefined || state === "unknown") {
    if (published === undefined) return undefined;
    // the job was removed (removeOnComplete/-Fail) but its verdict is still in the stream
    return { state: published.decision === "error" ? "failed" : "completed", verdict: published };
  }
  if (published !== undefined) return { state, verdict: published };
  if (state === "completed") return { state, verdict: job.returnvalue ?? undefined };
  if (state === "failed") return { state, verdict: failedJobVerdict(jobId, job.data, job.failedReason, job.finishedOn) };
  return { state, verdict: undefined };
}
