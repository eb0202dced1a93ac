import type { Redis } from "ioredis";
import { ClipguardError, isClipguardError } from "../shared/errors.js";

/** Where a connection points, for error messages: host and port only (a URL may carry a password). */
export function describeRedis(redis: Redis): string {
  const { host, port, path } = redis.options;
  return path !== undefined && path !== "" ? path : `${host ?? "127.0.0.1"}:${port ?? 6379}`;
}

/** Wraps a Redis failure in CLIPGUARD_E_REDIS; ClipguardErrors pass through unchanged. */
export function redisError(redis: Redis, err: unknown): ClipguardError {
  if (isClipguardError(err)) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new ClipguardError("CLIPGUARD_E_REDIS", `Redis at ${describeRedis(redis)} is unreachable or failed: ${reason}`, { cause: err });
}

/**
 * Resolves once `redis` can take commands. Producer connections have no offline queue, so a
 * command sent while connecting fails at once; this waits for the connection being made (up to
 * `timeoutMs`), but fails at once while ioredis is between reconnect attempts, so a request
 * never hangs on a Redis that is known to be down.
 */
export async function whenReady(redis: Redis, timeoutMs: number): Promise<void> {
  switch (redis.status) {
    case "ready":
      return;
    case "wait":
      // lazyConnect: connect() resolves on ready and rejects when the first attempt fails
      try {
        await redis.connect();
      } catch (err) {
        throw redisError(redis, err);
      }
      return;
    case "end":
      throw redisError(redis, new Error("the connection is closed"));
    case "reconnecting":
    case "close":
      throw redisError(redis, new Error("the connection is down (reconnecting)"));
    case "connecting":
    case "connect":
      break; // an attempt is under way: wait for its outcome below
    default:
      break; // a status added by a later ioredis: wait for ready like for "connecting"
  }
  await new Promise<void>((resolve, reject) => {
    const done = (err?: unknown) => {
      clearTimeout(timer);
      redis.off("ready", onReady);
      redis.off("error", onError);
      redis.off("end", onEnd);
      if (err === undefined) resolve();
      else reject(redisError(redis, err));
    };
    const onReady = () => done();
    const onError = (err: unknown) => done(err);
    const onEnd = () => done(new Error("the connection is closed"));
    const timer = setTimeout(() => done(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
    redis.once("ready", onReady);
    redis.once("error", onError);
    redis.once("end", onEnd);
  });
}

/**
 * Disconnects, first letting a connection attempt under way finish: cutting one off during its
 * ready check leaves ioredis with an INFO that rejects unhandled (seen with BullMQ attached).
 */
export async function disconnectSettled(redis: Redis, timeoutMs = 2_000): Promise<void> {
  if (redis.status === "connecting" || redis.status === "connect") await whenReady(redis, timeoutMs).catch(() => {});
  redis.disconnect();
}
