import fs from "node:fs/promises";
import { ClipguardError } from "./errors.js";

/**
 * Image bytes from the two places every side of clipguard takes them: local files (CLI, client,
 * eval) and base64 text (jobs, the client, the API). Both refuse oversize input before
 * allocating it and fail with catalogue codes.
 */

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64URL = /^[A-Za-z0-9_-]*={0,2}$/;

/** Refuses empty byte arrays and ones over `maxBytes`; `what` names the input in the message. */
export function checkSize(bytes: Buffer, maxBytes: number, what: string): Buffer {
  if (bytes.length === 0) throw new ClipguardError("CLIPGUARD_E_IMAGE_EMPTY", `${what} has zero bytes`);
  if (bytes.length > maxBytes) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `${what} is ${bytes.length} bytes; the limit is ${maxBytes} (CLIPGUARD_MAX_IMAGE_BYTES)`);
  }
  return bytes;
}

/**
 * Strict base64: `Buffer.from(text, "base64")` silently skips garbage, so check the alphabet first.
 * Text far longer than the base64 of `maxBytes` (more than 1.5 times, which leaves room for line
 * breaks) is refused before it is copied or scanned.
 */
export function decodeBase64Strict(text: string, maxBytes: number): Buffer {
  if (text.length > 1.5 * (Math.ceil(maxBytes / 3) * 4) + 256) {
    throw new ClipguardError(
      "CLIPGUARD_E_IMAGE_TOO_LARGE",
      `image.base64 is ${text.length} characters; its bytes would be over the limit of ${maxBytes} (CLIPGUARD_MAX_IMAGE_BYTES)`,
    );
  }
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
export async function readImageFile(file: string, maxBytes: number): Promise<Buffer> {
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
