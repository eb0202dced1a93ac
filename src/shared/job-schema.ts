import { z } from "zod";
import type { Verdict } from "./verdict.js";

/** BullMQ job name for moderation jobs. */
export const JOB_NAME = "moderate";

const policyId = z.string().regex(/^[a-z0-9_-]+$/, "policy ids are [a-z0-9_-]+").max(100);

/** Keys under which producers store image bytes for `{ref}` jobs. */
export const REF_PREFIX = "clipguard:ref:";
/** What a finished job's inline image is replaced with (see the job processor): a ref that never exists. */
export const RELEASED_IMAGE = { ref: `${REF_PREFIX}released` } as const;
const REF_KEY = /^clipguard:ref:[A-Za-z0-9_-]{8,128}$/;

/** Where the image bytes come from: exactly one of url, base64, ref. */
export const jobImageSchema = z.union([
  z.strictObject({ url: z.string().min(1).max(8192) }),
  z.strictObject({ base64: z.string().min(1) }),
  // refs are confined to their own key space: a job must not read (and then delete) other keys
  z.strictObject({ ref: z.string().regex(REF_KEY, "must be a key under clipguard:ref: (as the client and the API write them)") }),
]);

/**
 * The job contract (README "Job contract"): queue CLIPGUARD_QUEUE, job name `moderate`.
 * Unknown keys are refused so typos do not pass silently.
 */
export const jobDataSchema = z.strictObject({
  image: jobImageSchema,
  imageId: z.string().min(1).max(512).optional(),
  policies: z.array(policyId).min(1).max(500).optional(),
  callbackUrl: z.string().min(1).max(8192).optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
});

export type JobImage = z.infer<typeof jobImageSchema>;
export type JobData = z.infer<typeof jobDataSchema>;

/** Per-stage latency of one job, in milliseconds. */
export interface JobTimings {
  queuedMs: number;
  fetchMs: number;
  decodeMs: number;
  inferenceMs: number;
  totalMs: number;
}

/** What the worker publishes: the `score` verdict plus job fields. */
export interface JobVerdict extends Verdict {
  jobId: string;
  imageId?: string;
  metadata?: Record<string, unknown>;
  timings: JobTimings;
  createdAt: string;
}

/**
 * The marker the worker's publisher writes next to each verdict stream entry, holding the entry
 * id: it makes the stream exactly-once per job, and "the verdict of job X" one GET and one XRANGE.
 */
export function publishedMarkerKey(stream: string, jobId: string): string {
  return `${stream}:published:${jobId}`;
}
