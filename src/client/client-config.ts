import type { Redis } from "ioredis";
import type { Config } from "../shared/config.js";
import type { ModerationClientOptions } from "./client-options.js";

/** Client options matching the workers' environment (queue, prefix, stream, limits, job retention). */
export function clientOptionsFromConfig(config: Config, redis: string | Redis = config.REDIS_URL): ModerationClientOptions {
  return {
    redis,
    queue: config.CLIPGUARD_QUEUE,
    prefix: config.CLIPGUARD_PREFIX,
    verdictStream: config.CLIPGUARD_VERDICT_STREAM,
    refTtlSeconds: config.CLIPGUARD_REF_TTL_S,
    maxImageBytes: config.CLIPGUARD_MAX_IMAGE_BYTES,
    attempts: config.CLIPGUARD_JOB_ATTEMPTS,
    keepCompleted: config.CLIPGUARD_KEEP_COMPLETED,
    keepFailed: config.CLIPGUARD_KEEP_FAILED,
  };
}
