/**
 * Deterministic photo-like JPEGs for the benchmark: smooth colour gradients, soft-edged shapes,
 * a low-frequency texture and per-pixel sensor-like noise, so that JPEG decoding costs what it
 * costs on real photos (solid colours would decode unrealistically fast). Generated once per
 * (version, size, index) into a cache folder and reused.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";

/** Bumped when the generator would produce other pixels. */
const IMAGE_GENERATOR_VERSION = 2;
const JPEG_QUALITY = 88;

export interface ImageSize {
  /** Key in results: "1mp", "12mp". */
  key: string;
  width: number;
  height: number;
}

export interface BenchImage {
  path: string;
  bytes: Buffer;
}

/** xorshift32: fast and deterministic; image pixels need no statistical quality. */
function random(seed: number): () => number {
  let state = (seed ^ 0x9e3779b9) >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 4294967296;
  };
}

const clampByte = (x: number): number => (x < 0 ? 0 : x > 255 ? 255 : x | 0);

/** Raw RGB pixels of image `index` at `width`×`height`. */
function renderPixels(width: number, height: number, index: number): Buffer {
  const rnd = random(1000 + index);
  const colour = () => [rnd() * 255, rnd() * 255, rnd() * 255] as const;
  const corners = [colour(), colour(), colour(), colour()] as const;
  const rgb = Buffer.alloc(width * height * 3);
  // gradient between four corner colours, plus a gentle texture
  const fx = (2 + rnd() * 6) / width;
  const fy = (2 + rnd() * 6) / height;
  for (let y = 0; y < height; y++) {
    const v = y / (height - 1);
    const texY = Math.sin(y * fy * Math.PI * 2);
    for (let x = 0; x < width; x++) {
      const u = x / (width - 1);
      const tex = 14 * Math.sin(x * fx * Math.PI * 2 + texY * 2);
      const i = (y * width + x) * 3;
      for (let c = 0; c < 3; c++) {
        const top = corners[0][c]! * (1 - u) + corners[1][c]! * u;
        const bottom = corners[2][c]! * (1 - u) + corners[3][c]! * u;
        rgb[i + c] = clampByte(top * (1 - v) + bottom * v + tex);
      }
    }
  }
  // soft-edged ellipses and rectangles, blended over the background
  const shapes = 10 + Math.floor(rnd() * 8);
  const scale = Math.min(width, height);
  for (let s = 0; s < shapes; s++) {
    const [r, g, b] = colour();
    const cx = rnd() * width;
    const cy = rnd() * height;
    const rx = scale * (0.04 + rnd() * 0.25);
    const ry = scale * (0.04 + rnd() * 0.25);
    const ellipse = rnd() < 0.6;
    const alpha = 0.5 + rnd() * 0.5;
    const x0 = Math.max(0, Math.floor(cx - rx));
    const x1 = Math.min(width - 1, Math.ceil(cx + rx));
    const y0 = Math.max(0, Math.floor(cy - ry));
    const y1 = Math.min(height - 1, Math.ceil(cy + ry));
    for (let y = y0; y <= y1; y++) {
      const dy = (y - cy) / ry;
      for (let x = x0; x <= x1; x++) {
        const dx = (x - cx) / rx;
        const d = ellipse ? Math.sqrt(dx * dx + dy * dy) : Math.max(Math.abs(dx), Math.abs(dy));
        if (d >= 1) continue;
        const a = alpha * Math.min(1, (1 - d) * 8); // soft edge
        const i = (y * width + x) * 3;
        rgb[i] = clampByte(rgb[i]! * (1 - a) + r * a);
        rgb[i + 1] = clampByte(rgb[i + 1]! * (1 - a) + g * a);
        rgb[i + 2] = clampByte(rgb[i + 2]! * (1 - a) + b * a);
      }
    }
  }
  // sensor-like noise (triangular, ±24): puts 12 MP JPEGs at ~3 MB, like a phone camera's
  for (let i = 0; i < rgb.length; i++) rgb[i] = clampByte(rgb[i]! + (rnd() + rnd() - 1) * 24);
  return rgb;
}

/** JPEG bytes of image `index` at `size` (deterministic for a given sharp/libjpeg). */
export async function renderJpeg(size: ImageSize, index: number): Promise<Buffer> {
  const raw = renderPixels(size.width, size.height, index);
  return sharp(raw, { raw: { width: size.width, height: size.height, channels: 3 } }).jpeg({ quality: JPEG_QUALITY }).toBuffer();
}

/** `count` images of `size`, from the cache folder when already generated. */
export async function benchImages(cacheDir: string, size: ImageSize, count: number): Promise<BenchImage[]> {
  await mkdir(cacheDir, { recursive: true });
  const images: BenchImage[] = [];
  for (let index = 0; index < count; index++) {
    const file = path.join(cacheDir, `v${IMAGE_GENERATOR_VERSION}-${size.width}x${size.height}-${index}.jpg`);
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch {
      bytes = await renderJpeg(size, index);
      // write-then-rename so that an interrupted run never leaves a truncated JPEG behind
      await writeFile(`${file}.tmp`, bytes);
      await rename(`${file}.tmp`, file);
    }
    images.push({ path: file, bytes });
  }
  return images;
}

/**
 * The same JPEG with a COM (comment) segment right after SOI holding `tag`: other bytes, other
 * SHA-256, identical pixels and decode cost. Used so that no cache keyed on the bytes can turn
 * a throughput measurement into a cache-hit measurement.
 */
export function withUniqueComment(jpeg: Buffer, tag: string): Buffer {
  if (jpeg[0] !== 0xff || jpeg[1] !== 0xd8) throw new Error("not a JPEG");
  const payload = Buffer.from(`clipguard-bench ${tag}`, "latin1");
  const header = Buffer.from([0xff, 0xfe, (payload.length + 2) >> 8, (payload.length + 2) & 0xff]);
  return Buffer.concat([jpeg.subarray(0, 2), header, payload, jpeg.subarray(2)]);
}
