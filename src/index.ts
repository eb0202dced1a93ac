/**
 * The clipguard package: the producer-side client and the types of the job contract.
 *
 * @example
 * import { ModerationClient } from "clipguard";
 * const client = new ModerationClient({ redis: "redis://127.0.0.1:6379" });
 * const verdict = await client.enqueueAndWait("photo.jpg");
 */
export { ModerationClient } from "./client/moderation-client.js";
export type { EnqueueOptions, ModerationClientOptions, WaitOptions } from "./client/client-options.js";
export type { ModerationJobState, ModerationJobStatus } from "./client/job-status.js";
export type { ImageInput } from "./client/image-input.js";
export type { ReadVerdictsOptions, VerdictEntry } from "./client/verdict-stream.js";
export { JOB_NAME, REF_PREFIX, jobDataSchema, type JobData, type JobImage, type JobTimings, type JobVerdict } from "./shared/job-schema.js";
export type { Decision, PolicyVerdict, Verdict } from "./shared/verdict.js";
export { ClipguardError, ERROR_CODES, isClipguardError, type ErrorCode } from "./shared/errors.js";
