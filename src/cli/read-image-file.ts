import fs from "node:fs/promises";
import { ClipguardError } from "../shared/errors.js";

/** Reads an image file, refusing one over `maxBytes` before reading it. */
export async function readImageFile(file: string, maxBytes: number): Promise<Buffer> {
  let size: number;
  try {
    const stat = await fs.stat(file);
    if (!stat.isFile()) throw new ClipguardError("CLIPGUARD_E_IMAGE_READ", `${file} is not a regular file`);
    size = stat.size;
  } catch (err) {
    if (err instanceof ClipguardError) throw err;
    throw new ClipguardError("CLIPGUARD_E_IMAGE_READ", `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`, { cause: err });
  }
  if (size > maxBytes) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `${file} is ${size} bytes; the limit is ${maxBytes} (CLIPGUARD_MAX_IMAGE_BYTES)`);
  }
  try {
    return await fs.readFile(file);
  } catch (err) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_READ", `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`, { cause: err });
  }
}
