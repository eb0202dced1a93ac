import type { Redis } from "ioredis";
import { ClipguardError } from "../shared/errors.js";
import type { JobImage } from "../shared/job-schema.js";
import { fetchImageUrl, type UrlFetchOptions } from "./url-fetcher.js";

export interface ImageSourceOptions {
  maxBytes: number;
  url: Omit<UrlFetchOptions, "maxBytes">;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64URL = /^[A-Za-z0-9_-]*={0,2}$/;

/** Strict base64 (standard or URL-safe alphabet, whitespace ignored); Buffer.from alone accepts garbage. */
export function decodeBase64Strict(text: string, maxBytes: number): Buffer {
  const compact = text.replace(/\s+/g, "");
  const body = compact.startsWith("data:") ? compact.slice(compact.indexOf(",") + 1) : compact;
  if (body.length === 0 || body.length % 4 === 1 || !(BASE64.test(body) || BASE64URL.test(body))) {
    throw new ClipguardError("CLIPGUARD_E_BASE64", "image.base64 is not valid base64");
  }
  if (Math.floor((body.length * 3) / 4) > maxBytes + 2) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `image.base64 decodes to more than ${maxBytes} bytes (CLIPGUARD_MAX_IMAGE_BYTES)`);
  }
  const bytes = Buffer.from(body, BASE64.test(body) ? "base64" : "base64url");
  if (bytes.length > maxBytes) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `image.base64 decodes to ${bytes.length} bytes; the limit is ${maxBytes}`);
  }
  return bytes;
}

/**
 * Resolves a job's image to bytes: `url` through the SSRF-filtering fetcher, `base64` strictly
 * decoded, `ref` read from Redis (the key is deleted by the caller once the verdict is published).
 */
export async function loadJobImage(image: JobImage, redis: Redis, options: ImageSourceOptions): Promise<Buffer> {
  if ("url" in image) {
    const { bytes } = await fetchImageUrl(image.url, { ...options.url, maxBytes: options.maxBytes });
    return bytes;
  }
  if ("base64" in image) return decodeBase64Strict(image.base64, options.maxBytes);
  let bytes: Buffer | null;
  try {
    bytes = await redis.getBuffer(image.ref);
  } catch (err) {
    throw new ClipguardError("CLIPGUARD_E_REDIS", `cannot read image.ref from Redis (${(err as Error).message})`, { cause: err });
  }
  if (bytes === null) {
    throw new ClipguardError("CLIPGUARD_E_REF_MISSING", `no bytes are stored under image.ref "${image.ref}" (expired, or never stored)`);
  }
  if (bytes.length > options.maxBytes) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `image.ref holds ${bytes.length} bytes; the limit is ${options.maxBytes}`);
  }
  return bytes;
}
