import type { Redis } from "ioredis";
import { ClipguardError } from "../shared/errors.js";
import { decodeBase64Strict } from "../shared/image-bytes.js";
import type { JobImage } from "../shared/job-schema.js";
import { fetchImageUrl, type UrlFetchOptions } from "./url-fetcher.js";

export interface ImageSourceOptions {
  maxBytes: number;
  url: Omit<UrlFetchOptions, "maxBytes">;
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
    // the size first: an oversized value is refused without moving it out of Redis
    const size = await redis.strlen(image.ref);
    if (size > options.maxBytes) {
      throw new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `image.ref holds ${size} bytes; the limit is ${options.maxBytes} (CLIPGUARD_MAX_IMAGE_BYTES)`);
    }
    bytes = await redis.getBuffer(image.ref);
  } catch (err) {
    if (err instanceof ClipguardError) throw err;
    throw new ClipguardError("CLIPGUARD_E_REDIS", `cannot read image.ref from Redis (${(err as Error).message})`, { cause: err });
  }
  if (bytes === null) {
    throw new ClipguardError("CLIPGUARD_E_REF_MISSING", `no bytes are stored under image.ref "${image.ref}" (expired, or never stored)`);
  }
  if (bytes.length > options.maxBytes) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `image.ref holds ${bytes.length} bytes; the limit is ${options.maxBytes} (CLIPGUARD_MAX_IMAGE_BYTES)`);
  }
  return bytes;
}
