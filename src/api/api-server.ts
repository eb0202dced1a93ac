import fastifyMultipart from "@fastify/multipart";
import fastifyRateLimit from "@fastify/rate-limit";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { clientOptionsFromConfig } from "../client/client-config.js";
import { ModerationClient } from "../client/moderation-client.js";
import { disconnectSettled, whenReady } from "../client/redis-ready.js";
import type { Config } from "../shared/config.js";
import { ClipguardError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { createProducerConnection } from "../shared/redis.js";
import { ApiKeyring, authHook } from "./api-auth.js";
import { errorHandler } from "./api-errors.js";
import { registerModerationRoutes } from "./moderation-routes.js";
import { openApiDocument } from "./openapi.js";
import { registerRescoreRoute } from "./rescore-route.js";

export interface ApiServerOptions {
  logger: Logger;
  /** Where the rate-limit counters live. @default "clipguard:ratelimit:" */
  rateLimitNamespace?: string;
}

/** Room for the JSON around a base64 image: the other fields and metadata. */
const JSON_OVERHEAD_BYTES = 64 * 1024;

/**
 * Builds the HTTP API (not listening yet): fastify with bearer authentication, a per-key rate
 * limit counted in Redis, JSON and multipart bodies capped by CLIPGUARD_MAX_IMAGE_BYTES, and the
 * routes. Closing the server closes its Redis connection and client.
 *
 * @throws ClipguardError CLIPGUARD_E_CONFIG when CLIPGUARD_API_KEYS is empty and CLIPGUARD_API_AUTH is not "off".
 */
export async function buildApiServer(config: Config, options: ApiServerOptions): Promise<FastifyInstance> {
  if (config.CLIPGUARD_API_KEYS.length === 0 && config.CLIPGUARD_API_AUTH !== "off") {
    throw new ClipguardError(
      "CLIPGUARD_E_CONFIG",
      "CLIPGUARD_API_KEYS is empty: set one or more comma-separated API keys, or CLIPGUARD_API_AUTH=off to run the API without authentication (only behind another authenticating proxy)",
    );
  }
  const keyring = config.CLIPGUARD_API_AUTH === "off" ? undefined : new ApiKeyring(config.CLIPGUARD_API_KEYS);
  const maxImageBytes = config.CLIPGUARD_MAX_IMAGE_BYTES;

  // one producer connection (no offline queue: a request fails at once while Redis is away)
  const redis: Redis = createProducerConnection(config.REDIS_URL);
  const log = options.logger.child({ component: "api" });
  let lastRedisError = "";
  const onRedisError = (err: unknown) => {
    // ioredis reports every failed reconnect; log each distinct failure once
    const text = err instanceof Error ? err.message : String(err);
    if (text !== lastRedisError) log.warn({ err }, "redis connection error");
    lastRedisError = text;
  };
  redis.on("error", onRedisError);
  redis.on("ready", () => {
    lastRedisError = "";
  });
  const client = new ModerationClient({ ...clientOptionsFromConfig(config, redis), onRedisError, connectTimeoutMs: 2_000 });
  // connect before serving, so the first requests are counted by the rate limiter too; a Redis
  // that is down does not stop the start (/readyz reports it, /v1 answers 503 until it is back)
  await whenReady(redis, 5_000).catch((err: unknown) => log.warn({ err }, "redis is not reachable yet; starting anyway"));

  const appLogger: FastifyBaseLogger = options.logger;
  const app = Fastify({
    loggerInstance: appLogger,
    // base64 inflates by 4/3; uploads are limited per file by the multipart plugin instead
    bodyLimit: Math.ceil((maxImageBytes * 4) / 3) + JSON_OVERHEAD_BYTES,
    return503OnClosing: true,
  });
  app.decorateRequest("clientKey", "");
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler(() => {
    throw new ClipguardError("CLIPGUARD_E_NOT_FOUND", "no such route");
  });
  app.addHook("onRequest", authHook(keyring));
  app.addHook("onClose", async () => {
    await client.close();
    await disconnectSettled(redis);
  });

  await app.register(fastifyRateLimit, {
    global: true,
    max: config.CLIPGUARD_API_RATE_LIMIT,
    timeWindow: 60_000,
    // after authentication (onRequest) and before the body is read
    hook: "preParsing",
    redis,
    nameSpace: options.rateLimitNamespace ?? "clipguard:ratelimit:",
    keyGenerator: (request) => request.clientKey,
    // Redis away: let the request through; it then fails with 503 where it needs Redis
    skipOnError: true,
    errorResponseBuilder: (_request, context) =>
      new ClipguardError("CLIPGUARD_E_RATE_LIMITED", `more than ${context.max} requests per minute with this API key; retry in ${context.after}`),
  });
  await app.register(fastifyMultipart, { limits: { fileSize: maxImageBytes, files: 1 } });

  const openapi = openApiDocument({ maxImageBytes, waitMs: config.CLIPGUARD_API_WAIT_MS, rateLimit: config.CLIPGUARD_API_RATE_LIMIT });
  const open = { config: { public: true, rateLimit: false as const } };
  app.get("/healthz", open, async () => ({ status: "ok" }));
  app.get("/readyz", open, async () => {
    await client.ping(1_000);
    return { status: "ready" };
  });
  app.get("/openapi.json", open, async () => openapi);
  registerModerationRoutes(app, { client, maxImageBytes, waitMs: config.CLIPGUARD_API_WAIT_MS });
  registerRescoreRoute(app, { config, redis });
  return app;
}
