import { Redis, type RedisOptions } from "ioredis";

/**
 * A connection for long-lived consumers (BullMQ workers, stream readers): commands wait while
 * Redis reconnects, as BullMQ requires (`maxRetriesPerRequest: null`).
 */
export function createWorkerConnection(url: string, options: RedisOptions = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, ...options });
}

/**
 * A connection for producers that answer people (the API, the CLI): no offline queue, so a
 * command fails at once while Redis is unreachable instead of hanging the request.
 */
export function createProducerConnection(url: string, options: RedisOptions = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 5_000, ...options });
}
