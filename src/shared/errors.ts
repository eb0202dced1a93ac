/**
 * The catalogue of clipguard error codes. Code branches on `code`, never on message text.
 * Every code here is listed in the README's error table (a test checks it).
 *
 * `retryable` says whether a BullMQ job failing with this code should be retried (transient
 * fault) or failed at once as unrecoverable (bad input).
 */
export const ERROR_CODES = {
  // images
  CLIPGUARD_E_IMAGE_READ: { retryable: false, summary: "the image file could not be read" },
  CLIPGUARD_E_IMAGE_EMPTY: { retryable: false, summary: "the image has zero bytes" },
  CLIPGUARD_E_IMAGE_TOO_LARGE: { retryable: false, summary: "the image is larger than the byte limit" },
  CLIPGUARD_E_IMAGE_FORMAT: {
    retryable: false,
    summary: "not an image, or a format outside the allowlist (JPEG, PNG, WebP, GIF, AVIF, TIFF)",
  },
  CLIPGUARD_E_IMAGE_PIXELS: { retryable: false, summary: "the image has more pixels than the pixel limit" },
  CLIPGUARD_E_IMAGE_DECODE: { retryable: false, summary: "the image is truncated or corrupt" },
  // image sources (worker)
  CLIPGUARD_E_JOB_INVALID: { retryable: false, summary: "the job data does not match the job contract" },
  CLIPGUARD_E_JOB_STALLED: {
    retryable: false,
    summary: "the job stalled (its worker was killed or lost the job's lock) more often than CLIPGUARD_MAX_STALLS allows",
  },
  CLIPGUARD_E_URL_REFUSED: {
    retryable: false,
    summary: "the URL is not http(s), or resolves to a private, loopback or otherwise non-public address",
  },
  CLIPGUARD_E_URL_FETCH: { retryable: true, summary: "the URL could not be fetched (network fault, 5xx)" },
  CLIPGUARD_E_URL_STATUS: { retryable: false, summary: "the URL answered with a client error status (4xx)" },
  CLIPGUARD_E_URL_TIMEOUT: { retryable: true, summary: "the URL's host could not be resolved or connected to within the timeout" },
  CLIPGUARD_E_URL_STALLED: {
    retryable: false,
    summary: "the URL's server accepted the connection but did not deliver the whole response within the timeout",
  },
  CLIPGUARD_E_URL_REDIRECTS: { retryable: false, summary: "the URL redirected more often than the redirect limit" },
  CLIPGUARD_E_REF_MISSING: { retryable: false, summary: "no bytes are stored under the job's ref key (expired?)" },
  CLIPGUARD_E_BASE64: { retryable: false, summary: "the base64 field is not valid base64" },
  CLIPGUARD_E_POLICY_UNKNOWN: { retryable: false, summary: "the job names a policy id that is not loaded" },
  // model and policies (startup)
  CLIPGUARD_E_MODEL: { retryable: false, summary: "the model directory is missing a file or does not fit the layout" },
  CLIPGUARD_E_POLICIES: { retryable: false, summary: "the policies file is invalid" },
  CLIPGUARD_E_CONFIG: { retryable: false, summary: "an environment variable or option is invalid" },
  CLIPGUARD_E_LABELS: {
    retryable: false,
    summary: "the labelled examples of `clipguard eval` are missing, malformed, or name unknown policy ids",
  },
  // runtime
  CLIPGUARD_E_INFERENCE: { retryable: true, summary: "the ONNX session failed while running" },
  // retryable: a run's cost depends on the batch shape, not on the pixels, so a run past the
  // deadline points at the machine (CPU starvation, swapping, a wedged runtime), and the batch
  // holds other jobs' images too; a job that hangs on every attempt ends with an error verdict
  CLIPGUARD_E_INFERENCE_TIMEOUT: {
    retryable: true,
    summary: "an inference run took longer than CLIPGUARD_INFERENCE_TIMEOUT_MS; a new inference thread took over",
  },
  CLIPGUARD_E_REDIS: { retryable: true, summary: "Redis is unreachable or answered with an error" },
  CLIPGUARD_E_WEBHOOK: { retryable: true, summary: "the callback URL did not accept the verdict" },
  CLIPGUARD_E_TIMEOUT: { retryable: true, summary: "the job ran past its deadline" },
  CLIPGUARD_E_SHUTDOWN: {
    retryable: true,
    summary: "the worker shut down before the job's image was judged; the job is left to another worker (never in a verdict)",
  },
  CLIPGUARD_E_INTERNAL: { retryable: true, summary: "an unexpected internal error" },
  // producers: client, CLI and HTTP API
  CLIPGUARD_E_UNAUTHORIZED: { retryable: false, summary: "the HTTP API request has no valid `Authorization: Bearer <key>` header" },
  CLIPGUARD_E_NOT_FOUND: { retryable: false, summary: "no job (or route) with that id is known" },
  CLIPGUARD_E_RATE_LIMITED: { retryable: true, summary: "the API key sent more requests per minute than CLIPGUARD_API_RATE_LIMIT" },
  CLIPGUARD_E_WAIT_TIMEOUT: {
    retryable: true,
    summary: "no verdict arrived within the wait time; the job is still queued or running",
  },
  // model downloads (`clipguard model pull`)
  CLIPGUARD_E_DOWNLOAD_NOT_FOUND: {
    retryable: false,
    summary: "the Hub has no such repository or revision, or it is private/gated and HF_TOKEN has no access",
  },
  CLIPGUARD_E_DOWNLOAD_FILE_MISSING: {
    retryable: false,
    summary: "the repository lacks a file the model layout needs (e.g. the ONNX files of the chosen variant)",
  },
  CLIPGUARD_E_DOWNLOAD_NETWORK: { retryable: true, summary: "the Hub was unreachable, timed out or answered 5xx, after retries" },
  CLIPGUARD_E_DOWNLOAD_RESPONSE: {
    retryable: false,
    summary: "the Hub answered with an unexpected status, too many redirects or malformed metadata",
  },
  CLIPGUARD_E_DOWNLOAD_CHECKSUM: {
    retryable: true,
    summary: "a downloaded file does not match the checksum the Hub publishes; the partial file was deleted",
  },
  CLIPGUARD_E_DOWNLOAD_TARGET_EXISTS: { retryable: false, summary: "the target model directory already exists (pass --force to replace it)" },
} as const satisfies Record<string, { retryable: boolean; summary: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** An error with a catalogue code; the message is written for a person who must act on it. */
export class ClipguardError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ClipguardError";
    this.code = code;
    this.retryable = ERROR_CODES[code].retryable;
  }
}

export function isClipguardError(err: unknown): err is ClipguardError {
  return err instanceof ClipguardError;
}

/** The `{code, message}` pair that verdicts and API errors carry. */
export function toErrorInfo(err: unknown): { code: ErrorCode; message: string } {
  if (isClipguardError(err)) return { code: err.code, message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: "CLIPGUARD_E_INTERNAL", message };
}
