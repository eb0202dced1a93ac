import type { Redis } from "ioredis";
import { ClipguardError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";

/**
 * BullMQ loses jobs when Redis evicts keys: refuse to start unless `maxmemory-policy` is
 * `noeviction`. Managed Redis services that disable CONFIG get a warning instead.
 */
export async function checkRedisSettings(redis: Redis, logger: Logger): Promise<void> {
  let reply: unknown;
  try {
    reply = await redis.config("GET", "maxmemory-policy");
  } catch (err) {
    if ((err as { name?: string }).name === "ReplyError") {
      logger.warn({ err }, "cannot read maxmemory-policy (CONFIG is disabled); make sure it is noeviction");
      return;
    }
    throw new ClipguardError("CLIPGUARD_E_REDIS", `cannot reach Redis: ${(err as Error).message}`, { cause: err });
  }
  const policy = Array.isArray(reply) ? reply[1] : undefined;
  if (typeof policy === "string" && policy !== "noeviction") {
    throw new ClipguardError(
      "CLIPGUARD_E_REDIS",
      `Redis maxmemory-policy is "${policy}"; BullMQ needs "noeviction" or jobs can silently disappear (set it with: CONFIG SET maxmemory-policy noeviction, or in redis.conf)`,
    );
  }
}
