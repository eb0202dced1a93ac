import type { FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { z } from "zod";
import { whenReady } from "../client/redis-ready.js";
import { runRescore, type RescoreRunSummary } from "../policies/rescore-run.js";
import { windowStart, type RescoreWindow } from "../policies/rescore-window.js";
import type { Config } from "../shared/config.js";
import { ClipguardError, isClipguardError } from "../shared/errors.js";
import { parseOrReject } from "./moderation-request.js";

export interface RescoreRouteOptions {
  config: Config;
  /** The API's producer connection. */
  redis: Redis;
}

/** `POST /v1/rescore` body: exactly one of `since` (a duration) and `from` (a verdict stream id). */
export const rescoreRequestSchema = z
  .strictObject({
    since: z.string().min(1).max(32).optional().describe("re-judge the verdicts of the last DURATION: 90s, 15m, 2h, 7d"),
    from: z.string().min(1).max(64).optional().describe("re-judge the verdicts after this verdict stream id (0: the whole stream)"),
  })
  .refine((body) => (body.since === undefined) !== (body.from === undefined), { message: "give exactly one of since and from", path: ["since"] });

/**
 * `POST /v1/rescore` → 200 `{seen, changed, skipped, …}`: re-judges a window of the verdict
 * stream against the policies file of the API process (CLIPGUARD_POLICIES), with the model of
 * CLIPGUARD_MODEL_DIR loaded for the request only (its text tower runs only for prompts missing
 * from the shared text cache; the image tower never runs), and publishes the changed verdicts
 * to CLIPGUARD_RESCORE_STREAM, as `clipguard rescore` does. Requests run one at a time.
 */
export function registerRescoreRoute(app: FastifyInstance, options: RescoreRouteOptions): void {
  const { config, redis } = options;
  let queue: Promise<unknown> = Promise.resolve();

  app.post("/v1/rescore", async (request) => {
    const body = parseOrReject(rescoreRequestSchema, request.body ?? {}, "request body");
    const window: RescoreWindow = body.since !== undefined ? { since: body.since } : { from: body.from ?? "0" };
    try {
      windowStart(window);
    } catch (err) {
      if (isClipguardError(err)) throw new ClipguardError("CLIPGUARD_E_JOB_INVALID", err.message);
      throw err;
    }
    await whenReady(redis, 2_000);
    const run = queue.then(() =>
      runRescore(
        config,
        { modelDir: config.CLIPGUARD_MODEL_DIR, variant: config.CLIPGUARD_MODEL_VARIANT ?? "fp32", policiesFile: config.CLIPGUARD_POLICIES, window },
        redis,
      ),
    );
    queue = run.catch(() => undefined);
    const summary: RescoreRunSummary = await run;
    request.log.info({ seen: summary.seen, changed: summary.changed, skipped: summary.skipped, policyVersion: summary.policyVersion }, "rescore done");
    return summary;
  });
}
