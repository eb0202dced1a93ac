import { z } from "zod";
import { ERROR_CODES } from "../shared/errors.js";
import { moderationRequestSchema } from "./moderation-request.js";

/** JSON Schema (2020-12, as OpenAPI 3.1 uses) of a zod schema, without the `$schema` key. */
function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, { target: "draft-2020-12", io: "input" });
  return rest;
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

function errorResponse(description: string) {
  return { description, content: { "application/json": { schema: ref("Error") } } };
}

const JOB_STATES = ["waiting", "prioritized", "delayed", "active", "waiting-children", "completed", "failed"];

/**
 * The OpenAPI 3.1 document served at `/openapi.json`. The JSON request body schema is generated
 * from the zod schema the route validates with, so the two cannot drift; the rest is written out.
 */
export function openApiDocument(options: { maxImageBytes: number; waitMs: number; rateLimit: number }): Record<string, unknown> {
  const requestBody = jsonSchema(moderationRequestSchema);
  const withAuthErrors = {
    "401": errorResponse("no valid `Authorization: Bearer <key>` (CLIPGUARD_E_UNAUTHORIZED)"),
    "429": errorResponse(`more than ${options.rateLimit} requests per minute for this key (CLIPGUARD_E_RATE_LIMITED)`),
    "503": errorResponse("Redis is unreachable (CLIPGUARD_E_REDIS)"),
  };
  return {
    openapi: "3.1.0",
    info: {
      title: "clipguard moderation API",
      version: "1.0.0",
      description:
        "Enqueue images for CLIP-based moderation and read the verdicts. Every /v1 route needs `Authorization: Bearer <key>` (one of CLIPGUARD_API_KEYS). Errors are `{\"error\": {\"code\", \"message\"}}` with a CLIPGUARD_E_* code.",
    },
    components: {
      securitySchemes: { bearerAuth: { type: "http", scheme: "bearer" } },
      schemas: {
        ModerationRequest: { ...requestBody, oneOf: [{ required: ["url"] }, { required: ["base64"] }] },
        ModerationUpload: {
          type: "object",
          required: ["image"],
          properties: {
            image: { type: "string", contentMediaType: "application/octet-stream", description: `the image file, at most ${options.maxImageBytes} bytes` },
            imageId: { type: "string", minLength: 1, maxLength: 512 },
            policies: { type: "string", description: "comma-separated policy ids", examples: ["nudity,violence"] },
          },
        },
        JobAccepted: {
          type: "object",
          required: ["jobId"],
          properties: { jobId: { type: "string" } },
          additionalProperties: false,
        },
        JobStatus: {
          type: "object",
          required: ["state", "verdict"],
          properties: {
            state: { type: "string", enum: JOB_STATES },
            verdict: { oneOf: [ref("Verdict"), { type: "null" }], description: "null until the verdict is published" },
          },
          additionalProperties: false,
        },
        PolicyVerdict: {
          type: "object",
          required: ["id", "score", "decision", "prompt"],
          properties: {
            id: { type: "string" },
            score: { type: "number" },
            decision: { type: "string", enum: ["allow", "review", "block"] },
            prompt: { type: "string", description: "the policy prompt closest to the image" },
          },
        },
        Verdict: {
          type: "object",
          required: ["jobId", "decision", "policies", "model", "policyVersion", "timings", "createdAt"],
          properties: {
            jobId: { type: "string" },
            imageId: { type: "string" },
            decision: { type: "string", enum: ["allow", "review", "block", "error"] },
            policies: { type: "array", items: ref("PolicyVerdict") },
            imageSha256: { type: "string" },
            model: {
              type: "object",
              required: ["name", "fingerprint"],
              properties: { name: { type: "string" }, fingerprint: { type: "string" } },
            },
            policyVersion: { type: "string" },
            error: ref("ErrorInfo"),
            metadata: { type: "object" },
            timings: {
              type: "object",
              required: ["queuedMs", "fetchMs", "decodeMs", "inferenceMs", "totalMs"],
              properties: Object.fromEntries(["queuedMs", "fetchMs", "decodeMs", "inferenceMs", "totalMs"].map((k) => [k, { type: "number" }])),
            },
            createdAt: { type: "string", format: "date-time" },
          },
        },
        ErrorInfo: {
          type: "object",
          required: ["code", "message"],
          properties: { code: { type: "string", enum: Object.keys(ERROR_CODES) }, message: { type: "string" } },
        },
        Error: {
          type: "object",
          required: ["error"],
          properties: { error: ref("ErrorInfo") },
        },
      },
    },
    security: [{ bearerAuth: [] }],
    paths: {
      "/v1/moderations": {
        post: {
          operationId: "createModeration",
          summary: "Enqueue an image for moderation",
          parameters: [
            {
              name: "wait",
              in: "query",
              required: false,
              schema: { type: "string", enum: ["true", "false"] },
              description: `wait up to ${options.waitMs} ms (CLIPGUARD_API_WAIT_MS) for the verdict`,
            },
          ],
          requestBody: {
            required: true,
            content: {
              "application/json": { schema: ref("ModerationRequest") },
              "multipart/form-data": { schema: ref("ModerationUpload") },
            },
          },
          responses: {
            "200": { description: "with wait=true: the verdict (decision `error` when the image could not be judged)", content: { "application/json": { schema: ref("Verdict") } } },
            "202": {
              description: "the job is queued (with wait=true: no verdict within the wait time)",
              headers: { Location: { schema: { type: "string" }, description: "the job's status URL" } },
              content: { "application/json": { schema: ref("JobAccepted") } },
            },
            "400": errorResponse("invalid body (CLIPGUARD_E_JOB_INVALID, CLIPGUARD_E_BASE64, CLIPGUARD_E_IMAGE_EMPTY)"),
            "413": errorResponse(`the image is larger than ${options.maxImageBytes} bytes (CLIPGUARD_E_IMAGE_TOO_LARGE)`),
            "415": errorResponse("the body is neither application/json nor multipart/form-data (CLIPGUARD_E_JOB_INVALID)"),
            ...withAuthErrors,
          },
        },
      },
      "/v1/moderations/{jobId}": {
        get: {
          operationId: "getModeration",
          summary: "State and verdict of a job",
          parameters: [{ name: "jobId", in: "path", required: true, schema: { type: "string" } }],
          responses: {
            "200": { description: "the job's state, and its verdict once published", content: { "application/json": { schema: ref("JobStatus") } } },
            "404": errorResponse("no job with this id (CLIPGUARD_E_NOT_FOUND)"),
            ...withAuthErrors,
          },
        },
      },
      "/v1/rescore": {
        post: {
          operationId: "rescore",
          summary: "Re-judge a window of past verdicts against the current policies, without the image tower",
          requestBody: {
            required: true,
            content: {
              "application/json": {
                schema: {
                  type: "object",
                  additionalProperties: false,
                  description: "exactly one of since and from",
                  properties: {
                    since: { type: "string", description: "re-judge the verdicts of the last DURATION: 90s, 15m, 2h, 7d" },
                    from: { type: "string", description: "re-judge the verdicts after this verdict stream id (0: the whole stream)" },
                  },
                },
              },
            },
          },
          responses: {
            "200": {
              description: "counts of the run; changed verdicts are published to CLIPGUARD_RESCORE_STREAM",
              content: {
                "application/json": {
                  schema: {
                    type: "object",
                    required: ["seen", "changed", "skipped"],
                    properties: { seen: { type: "integer" }, changed: { type: "integer" }, skipped: { type: "integer" } },
                  },
                },
              },
            },
            "400": errorResponse("invalid window (CLIPGUARD_E_JOB_INVALID)"),
            ...withAuthErrors,
          },
        },
      },
      "/healthz": {
        get: {
          operationId: "health",
          summary: "Liveness: the process answers",
          security: [],
          responses: { "200": { description: "alive", content: { "application/json": { schema: { type: "object", properties: { status: { const: "ok" } } } } } } },
        },
      },
      "/readyz": {
        get: {
          operationId: "ready",
          summary: "Readiness: Redis answers",
          security: [],
          responses: {
            "200": { description: "ready", content: { "application/json": { schema: { type: "object", properties: { status: { const: "ready" } } } } } },
            "503": errorResponse("Redis is unreachable (CLIPGUARD_E_REDIS)"),
          },
        },
      },
      "/openapi.json": {
        get: {
          operationId: "openapi",
          summary: "This document",
          security: [],
          responses: { "200": { description: "the OpenAPI 3.1 document", content: { "application/json": { schema: { type: "object" } } } } },
        },
      },
    },
  };
}
