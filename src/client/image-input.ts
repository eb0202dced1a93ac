import fs from "node:fs/promises";
import { ClipguardError } from "../shared/errors.js";

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
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64URL = /^[A-Za-z0-9_-]*={0,2}$/;

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

function checkSize(bytes: Buffer, maxBytes: number, what: string): Buffer {
  if (bytes.length === 0) throw new ClipguardError("CLIPGUARD_E_IMAGE_EMPTY", `${what} has zero bytes`);
  if (bytes.length > maxBytes) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `${what} is ${bytes.length} bytes; the limit is ${maxBytes} (CLIPGUARD_MAX_IMAGE_BYTES)`);
  }
  return bytes;
}

/** Strict base64: `Buffer.from(text, "base64")` silently skips garbage, so check the alphabet first. */
export function decodeBase64(text: string, maxBytes: number): Buffer {
  const compact = text.replace(/\s+/g, "");
  const body = /^data:[^,]*;base64,/.test(compact) ? compact.slice(compact.indexOf(",") + 1) : compact;
  const standard = BASE64.test(body);
  if (body.length === 0 || body.length % 4 === 1 || !(standard || BASE64URL.test(body))) {
    throw new ClipguardError("CLIPGUARD_E_BASE64", "image.base64 is not valid base64");
  }
  // refuse before allocating: the decoded size is known from the length
  if (Math.floor((body.length * 3) / 4) > maxBytes + 2) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `image.base64 decodes to more than ${maxBytes} bytes (CLIPGUARD_MAX_IMAGE_BYTES)`);
  }
  return checkSize(Buffer.from(body, standard ? "base64" : "base64url"), maxBytes, "image.base64");
}

/** Reads an image file, refusing one over `maxBytes` before reading it. */
export async function readImageBytes(file: string, maxBytes: number): Promise<Buffer> {
  const failed = (err: unknown) =>
    new ClipguardError("CLIPGUARD_E_IMAGE_READ", `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`, { cause: err });
  let size: number;
  try {
    const stat = await fs.stat(file);
    if (!stat.isFile()) throw new ClipguardError("CLIPGUARD_E_IMAGE_READ", `${file} is not a regular file`);
    size = stat.size;
  } catch (err) {
    throw err instanceof ClipguardError ? err : failed(err);
  }
  if (size > maxBytes) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `${file} is ${size} bytes; the limit is ${maxBytes} (CLIPGUARD_MAX_IMAGE_BYTES)`);
  }
  try {
    return checkSize(await fs.readFile(file), maxBytes, file);
  } catch (err) {
    throw err instanceof ClipguardError ? err : failed(err);
  }
}

/** Resolves an input to a URL or to bytes, with the checks a producer can make before enqueueing. */
export async function resolveImage(input: ImageInput, maxBytes: number): Promise<ResolvedImage> {
  if (typeof input === "string") {
    if (/^https?:\/\//i.test(input)) return checkedUrl(input, "the image URL");
    if (SCHEME.test(input)) throw new ClipguardError("CLIPGUARD_E_URL_REFUSED", `${input}: only http:// and https:// URLs are accepted`);
    return { bytes: await readImageBytes(input, maxBytes) };
  }
  if (input instanceof Uint8Array) {
    const bytes = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    return { bytes: checkSize(bytes, maxBytes, "the image buffer") };
  }
  if ("url" in input && typeof input.url === "string") return checkedUrl(input.url, "image.url");
  if ("base64" in input && typeof input.base64 === "string") return { bytes: decodeBase64(input.base64, maxBytes) };
  throw new ClipguardError("CLIPGUARD_E_JOB_INVALID", "the image must be a file path, an http(s) URL, a Buffer, {url} or {base64}");
}

/** A short label for an input in messages and CLI output: never the bytes. */
export function describeImage(input: ImageInput): string {
  if (typeof input === "string") return input;
  if (input instanceof Uint8Array) return `<${input.byteLength} bytes>`;
  return "url" in input ? input.url : "<base64>";
}
