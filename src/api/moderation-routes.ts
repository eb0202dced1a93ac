import type { FastifyInstance } from "fastify";
import type { ModerationClient } from "../client/moderation-client.js";
import { ClipguardError } from "../shared/errors.js";
import { jobIdParamsSchema, moderationQuerySchema, parseOrReject, submissionFromJson, submissionFromMultipart } from "./moderation-request.js";

export interface ModerationRoutesOptions {
  client: ModerationClient;
  maxImageBytes: number;
  /** How long `?wait=true` waits for the verdict before answering 202. */
  waitMs: number;
}

/**
 * `POST /v1/moderations` → 202 {jobId} (200 with the verdict when `?wait=true` gets one in time);
 * `GET /v1/moderations/:jobId` → {state, verdict}, 404 for unknown ids.
 */
export function registerModerationRoutes(app: FastifyInstance, options: ModerationRoutesOptions): void {
  const { client } = options;

  app.post("/v1/moderations", async (request, reply) => {
    const query = parseOrReject(moderationQuerySchema, request.query, "query");
    const submission = request.isMultipart() ? await submissionFromMultipart(request, options.maxImageBytes) : submissionFromJson(request.body);
    const jobId = await client.enqueue(submission.image, submission.options);
    request.log.info({ jobId }, "job enqueued");
    if (query.wait === "true") {
      const verdict = await client.waitForVerdict(jobId, { timeoutMs: options.waitMs });
      if (verdict !== undefined) return reply.code(200).send(verdict);
    }
    return reply.code(202).header("location", `/v1/moderations/${encodeURIComponent(jobId)}`).send({ jobId });
  });

  app.get("/v1/moderations/:jobId", async (request) => {
    const { jobId } = parseOrReject(jobIdParamsSchema, request.params, "path");
    const status = await client.getStatus(jobId);
    if (status === undefined) throw new ClipguardError("CLIPGUARD_E_NOT_FOUND", `no job with id ${jobId}`);
    return { state: status.state, verdict: status.verdict ?? null };
  });
}
