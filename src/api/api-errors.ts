import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { ERROR_CODES, isClipguardError, type ErrorCode } from "../shared/errors.js";

/** The body of every error response. */
export interface ApiErrorBody {
  error: { code: ErrorCode; message: string };
}

/** HTTP status per error code; codes not listed are server faults (500). */
const STATUS: Partial<Record<ErrorCode, number>> = {
  CLIPGUARD_E_JOB_INVALID: 400,
  CLIPGUARD_E_BASE64: 400,
  CLIPGUARD_E_URL_REFUSED: 400,
  CLIPGUARD_E_IMAGE_EMPTY: 400,
  CLIPGUARD_E_POLICY_UNKNOWN: 400,
  CLIPGUARD_E_UNAUTHORIZED: 401,
  CLIPGUARD_E_NOT_FOUND: 404,
  CLIPGUARD_E_IMAGE_TOO_LARGE: 413,
  CLIPGUARD_E_RATE_LIMITED: 429,
  CLIPGUARD_E_REDIS: 503,
};

/** What framework and plugin errors (body parsing, multipart limits) become, by HTTP status. */
function fromStatus(status: number): ErrorCode {
  if (status === 401) return "CLIPGUARD_E_UNAUTHORIZED";
  if (status === 404) return "CLIPGUARD_E_NOT_FOUND";
  if (status === 413) return "CLIPGUARD_E_IMAGE_TOO_LARGE";
  if (status === 429) return "CLIPGUARD_E_RATE_LIMITED";
  return "CLIPGUARD_E_JOB_INVALID";
}

/** Maps any thrown error to a status and the `{error: {code, message}}` body. */
export function toApiError(err: unknown): { status: number; body: ApiErrorBody } {
  if (isClipguardError(err)) {
    const status = STATUS[err.code] ?? 500;
    // server-side faults get the catalogue summary: their messages name hosts and internals
    const message = status >= 500 ? ERROR_CODES[err.code].summary : err.message;
    return { status, body: { error: { code: err.code, message } } };
  }
  const status = (err as Partial<FastifyError>).statusCode;
  if (typeof status === "number" && status >= 400 && status < 500) {
    const code = fromStatus(status);
    // fastify/multipart messages say what was wrong with the request ("Body is too large", …)
    const message = err instanceof Error && err.message !== "" ? err.message : "the request is invalid";
    // the multipart plugin reports too many parts as 413: that is a malformed request, not a big image
    const partsLimit = ["FST_PARTS_LIMIT", "FST_FILES_LIMIT", "FST_FIELDS_LIMIT"].includes((err as Partial<FastifyError>).code ?? "");
    return partsLimit
      ? { status: 400, body: { error: { code: "CLIPGUARD_E_JOB_INVALID", message } } }
      : { status, body: { error: { code, message } } };
  }
  return { status: 500, body: { error: { code: "CLIPGUARD_E_INTERNAL", message: "internal error" } } };
}

export function errorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const { status, body } = toApiError(err);
  if (status >= 500) request.log.error({ err, code: body.error.code }, "request failed");
  else request.log.info({ status, code: body.error.code }, "request refused");
  return reply.code(status).send(body);
}
