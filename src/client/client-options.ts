import type { Redis } from "ioredis";

export interface ModerationClientOptions {
  /** A Redis URL, or an ioredis instance the caller owns (`close()` leaves it open). */
  redis: string | Redis;
  /** The queue the workers consume (CLIPGUARD_QUEUE). @default "moderation" */
  queue?: string;
  /** BullMQ key prefix (CLIPGUARD_PREFIX). @default "bull" */
  prefix?: string;
  /** The stream the workers publish verdicts to (CLIPGUARD_VERDICT_STREAM). @default "clipguard:verdicts" */
  verdictStream?: string;
  /** Byte inputs larger than this are stored under a `clipguard:ref:` key instead of in the job. @default 262144 (256 KiB) */
  refThresholdBytes?: number;
  /** Lifetime of a ref key; it must outlast the job's time in the queue (CLIPGUARD_REF_TTL_S). @default 3600 */
  refTtlSeconds?: number;
  /** Largest image accepted (CLIPGUARD_MAX_IMAGE_BYTES); larger ones are refused before enqueueing. @default 20971520 */
  maxImageBytes?: number;
  /** Attempts per job, with exponential backoff between them (CLIPGUARD_JOB_ATTEMPTS). @default 5 */
  attempts?: number;
  /** First backoff delay; doubles with each attempt. @default 1000 */
  backoffDelayMs?: number;
  /** Finished jobs kept for `getVerdict` (CLIPGUARD_KEEP_COMPLETED / CLIPGUARD_KEEP_FAILED). @default 1000 / 5000 */
  keepCompleted?: number;
  keepFailed?: number;
  /** Finished jobs older than this are removed as well. @default 604800 (7 days) */
  keepSeconds?: number;
  /** How long an operation waits for a Redis connection that is being made. @default 5000 */
  connectTimeoutMs?: number;
  /** Called with Redis connection errors (the client keeps reconnecting). @default ignore */
  onRedisError?: (err: unknown) => void;
}

export interface EnqueueOptions {
  /** The caller's id for the image, echoed in the verdict. */
  imageId?: string;
  /** Policy ids to judge against. @default every loaded policy */
  policies?: string[];
  /** Where the worker POSTs the signed verdict (needs CLIPGUARD_WEBHOOK_SECRET on the worker). */
  callbackUrl?: string;
  /** Any JSON object, echoed in the verdict. */
  metadata?: Record<string, unknown>;
  /**
   * Job id for idempotent resubmission: enqueueing again with the same id while the job or its
   * verdict exists adds nothing and returns the same id. `[A-Za-z0-9_.-]`, not all digits.
   * @default a random UUID
   */
  jobId?: string;
  /** BullMQ priority, 1 (first) to 2097151; jobs without one go before prioritized jobs. */
  priority?: number;
}

export interface WaitOptions {
  /** @default 30000 */
  timeoutMs?: number;
}
