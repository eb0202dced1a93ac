import type { Multipart } from "@fastify/multipart";
import type { FastifyRequest } from "fastify";
import { z } from "zod";
import { isHttpUrl, type ImageInput } from "../client/image-input.js";
import type { EnqueueOptions } from "../client/client-options.js";
import { ClipguardError } from "../shared/errors.js";
import { jobDataSchema } from "../shared/job-schema.js";

/** Largest `metadata` accepted, as JSON: it travels in the job, the stream and the webhook. */
export const MAX_METADATA_BYTES = 16 * 1024;

const httpUrl = z.string().max(8192).refine(isHttpUrl, "must be an absolute http:// or https:// URL");

/**
 * `POST /v1/moderations` with a JSON body. `url` is only checked for syntax here: the worker
 * applies the SSRF rules when it fetches. Unknown keys are refused.
 */
export const moderationRequestSchema = z
  .strictObject({
    url: httpUrl.optional().describe("an http(s) URL the worker fetches the image from"),
    base64: z.string().min(1).optional().describe("the image bytes, base64 (standard or URL-safe; a data: URL prefix is accepted)"),
    imageId: jobDataSchema.shape.imageId.describe("your id for the image, echoed in the verdict"),
    policies: jobDataSchema.shape.policies.describe("policy ids to judge against (default: every loaded policy)"),
    callbackUrl: httpUrl.optional().describe("where the worker POSTs the signed verdict (Standard Webhooks)"),
    metadata: jobDataSchema.shape.metadata.describe(`any JSON object up to ${MAX_METADATA_BYTES} bytes, echoed in the verdict`),
  })
  .refine((body) => (body.url === undefined) !== (body.base64 === undefined), { message: "give exactly one of url and base64", path: ["url"] })
  .refine((body) => body.metadata === undefined || JSON.stringify(body.metadata).length <= MAX_METADATA_BYTES, {
    message: `metadata is larger than ${MAX_METADATA_BYTES} bytes as JSON`,
    path: ["metadata"],
  });

/** The multipart fields besides the `image` file. */
const multipartFieldsSchema = z.strictObject({
  imageId: jobDataSchema.shape.imageId,
  policies: z
    .string()
    .transform((v) =>
      v
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s.length > 0),
    )
    .pipe(z.array(z.string()).min(1, "list at least one policy id"))
    .pipe(jobDataSchema.shape.policies.unwrap())
    .optional(),
});

/** `?wait=true` waits for the verdict (up to CLIPGUARD_API_WAIT_MS). */
export const moderationQuerySchema = z.strictObject({
  wait: z.enum(["true", "false"]).optional(),
});

export const jobIdParamsSchema = z.strictObject({ jobId: z.string().min(1).max(128) });

export interface Submission {
  image: ImageInput;
  options: EnqueueOptions;
}

function describeIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.map(String).join(".") || "(body)"}: ${i.message}`).join("; ");
}

/** Parses with `schema`, or throws 400 CLIPGUARD_E_JOB_INVALID naming every problem. */
export function parseOrReject<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new ClipguardError("CLIPGUARD_E_JOB_INVALID", `invalid ${what}: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

export function submissionFromJson(body: unknown): Submission {
  const { url, base64, ...options } = parseOrReject(moderationRequestSchema, body, "request body");
  return { image: url !== undefined ? { url } : { base64: base64 ?? "" }, options };
}

/**
 * Reads a `multipart/form-data` upload: the file in the field `image` (at most `maxBytes`; the
 * multipart plugin stops reading past it and this answers 413), other fields `imageId` and
 * `policies` (comma-separated).
 */
export async function submissionFromMultipart(request: FastifyRequest, maxBytes: number): Promise<Submission> {
  let image: Buffer | undefined;
  const fields: Record<string, string> = {};
  const parts: AsyncIterableIterator<Multipart> = request.parts({
    limits: { fileSize: maxBytes, files: 1, fields: 8, parts: 9, fieldSize: 64 * 1024 },
  });
  for await (const part of parts) {
    if (part.type === "file") {
      if (part.fieldname !== "image") {
        part.file.resume();
        throw new ClipguardError("CLIPGUARD_E_JOB_INVALID", `unexpected file field "${part.fieldname}"; send the image in the field "image"`);
      }
      image = await part.toBuffer();
    } else {
      if (part.valueTruncated) throw new ClipguardError("CLIPGUARD_E_JOB_INVALID", `field "${part.fieldname}" is too long`);
      fields[part.fieldname] = String(part.value);
    }
  }
  if (image === undefined) throw new ClipguardError("CLIPGUARD_E_JOB_INVALID", 'no file in the multipart field "image"');
  const options = parseOrReject(multipartFieldsSchema, fields, "form fields");
  return { image, options };
}
