import { ClipguardError } from "../shared/errors.js";
import { checkSize, decodeBase64Strict, readImageFile } from "../shared/image-bytes.js";

/**
 * What `ModerationClient.enqueue` accepts as an image:
 * - a string starting with `http://` or `https://`: a URL the worker fetches;
 * - any other string: a local file path, read by the client;
 * - a Buffer / Uint8Array: the image bytes;
 * - `{ url }` or `{ base64 }` (standard or URL-safe alphabet, a `data:` URL prefix is accepted).
 */
export type ImageInput = string | Uint8Array | { url: string } | { base64: string };

/** An input resolved to what goes into the job: a URL, or bytes (sent as base64 or through a ref). */
export type ResolvedImage = { url: string } | { bytes: Buffer };

const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/**
 * Checks that `text` is an absolute http(s) URL. Only the syntax: the worker applies the SSRF
 * rules (private addresses, allowed hosts) when it fetches.
 */
export function isHttpUrl(text: string): boolean {
  if (!URL.canParse(text)) return false;
  const { protocol } = new URL(text);
  return protocol === "http:" || protocol === "https:";
}

function checkedUrl(url: string, what: string): { url: string } {
  if (url.length > 8192 || !isHttpUrl(url)) {
    throw new ClipguardError("CLIPGUARD_E_URL_REFUSED", `${what} must be an absolute http:// or https:// URL of at most 8192 characters`);
  }
  return { url };
}

/** Resolves an input to a URL or to bytes, with the checks a producer can make before enqueueing. */
export async function resolveImage(input: ImageInput, maxBytes: number): Promise<ResolvedImage> {
  if (typeof input === "string") {
    if (/^https?:\/\//i.test(input)) return checkedUrl(input, "the image URL");
    if (SCHEME.test(input)) throw new ClipguardError("CLIPGUARD_E_URL_REFUSED", `${input}: only http:// and https:// URLs are accepted`);
    return { bytes: await readImageFile(input, maxBytes) };
  }
  if (input instanceof Uint8Array) {
    const bytes = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    return { bytes: checkSize(bytes, maxBytes, "the image buffer") };
  }
  if ("url" in input && typeof input.url === "string") return checkedUrl(input.url, "image.url");
  if ("base64" in input && typeof input.base64 === "string") return { bytes: decodeBase64Strict(input.base64, maxBytes) };
  throw new ClipguardError("CLIPGUARD_E_JOB_INVALID", "the image must be a file path, an http(s) URL, a Buffer, {url} or {base64}");
}

/** A short label for an input in messages and CLI output: never the bytes. */
export function describeImage(input: ImageInput): string {
  if (typeof input === "string") return input;
  if (input instanceof Uint8Array) return `<${input.byteLength} bytes>`;
  return "url" in input ? input.url : "<base64>";
}
