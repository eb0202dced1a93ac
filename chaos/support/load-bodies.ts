/**
 * Request bodies for the API-load scenario: `POST /v1/moderations` JSON with a base64 JPEG that is
 * unique per request, so every job misses the image-embedding cache (keyed by the bytes' sha256)
 * and runs the image tower. The JPEG gets a 12-byte comment segment (COM, FF FE) after its SOI
 * marker holding a counter: the pixels stay the same, the bytes differ. SOI (2) + COM header (4)
 * + 12 bytes is 18 bytes, a multiple of 3, so the base64 of the rest of the file is computed once
 * and each body costs one 24-character base64 prefix.
 */
import sharp from "sharp";

export interface UniqueJpegBodies {
  /** Bytes of the JPEG each body carries (before base64), with the comment segment. */
  imageBytes: number;
  /** The JSON body of request `n`. */
  body(n: number, tag: string): string;
}

const NONCE_BYTES = 12;

export function uniqueJpegBodies(jpeg: Buffer): UniqueJpegBodies {
  if (jpeg[0] !== 0xff || jpeg[1] !== 0xd8) throw new Error("not a JPEG");
  const restBase64 = jpeg.subarray(2).toString("base64");
  const head = Buffer.alloc(2 + 4 + NONCE_BYTES);
  head.set([0xff, 0xd8, 0xff, 0xfe, 0x00, 2 + NONCE_BYTES]);
  return {
    imageBytes: jpeg.length + 4 + NONCE_BYTES,
    body(n, tag) {
      const prefix = Buffer.from(head);
      prefix.write(`${tag.slice(0, 4).padEnd(4, "_")}${n.toString(16).padStart(8, "0")}`, 6, "latin1");
      return `{"imageId":"${tag}-${n}","base64":"${prefix.toString("base64")}${restBase64}"}`;
    },
  };
}

/**
 * A JPEG of the photo at `width` pixels wide and `quality`: the small body (inline base64 in the
 * job) and the large one (over the 256 KiB ref threshold: stored under a `clipguard:ref:` key).
 */
export async function photoJpeg(file: string, width: number, quality: number): Promise<Buffer> {
  return sharp(file).resize({ width }).jpeg({ quality, chromaSubsampling: "4:4:4" }).toBuffer();
}
