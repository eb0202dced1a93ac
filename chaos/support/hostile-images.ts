/**
 * Hostile image files for the chaos suite, built in code at run time (nothing binary is
 * committed): broken, disguised and oversized inputs, and decompression bombs whose files are
 * small. Each builder is deterministic, so every run feeds the worker the same bytes.
 */
import { deflateSync } from "node:zlib";
import sharp from "sharp";

/** A deterministic byte generator (xorshift32). */
export function seededBytes(length: number, seed = 7): Buffer {
  const out = Buffer.alloc(length);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s & 0xff;
  }
  return out;
}

/** A small photo-like picture (gradients and grain), so that truncation cuts real entropy-coded data. */
function photoRaw(width: number, height: number): Buffer {
  const rgb = seededBytes(width * height * 3, 11);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      rgb[i] = (((255 * x) / width) * 0.8 + (rgb[i] ?? 0) * 0.2) | 0;
      rgb[i + 1] = (((255 * y) / height) * 0.8 + (rgb[i + 1] ?? 0) * 0.2) | 0;
    }
  }
  return rgb;
}

export async function photoJpeg(width = 640, height = 480): Promise<Buffer> {
  return sharp(photoRaw(width, height), { raw: { width, height, channels: 3 } }).jpeg({ quality: 85 }).toBuffer();
}

export async function photoPng(width = 640, height = 480): Promise<Buffer> {
  return sharp(photoRaw(width, height), { raw: { width, height, channels: 3 } }).png().toBuffer();
}

export async function photoTiff(width = 640, height = 480): Promise<Buffer> {
  return sharp(photoRaw(width, height), { raw: { width, height, channels: 3 } }).tiff({ compression: "lzw" }).toBuffer();
}

/** The first `fraction` of `bytes`. */
export function truncate(bytes: Buffer, fraction = 0.5): Buffer {
  return bytes.subarray(0, Math.floor(bytes.length * fraction));
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Buffer): number {
  let c = 0xffffffff;
  for (const b of bytes) c = (CRC_TABLE[(c ^ b) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * A valid PNG of `width`×`height` in one colour: palette, 1 bit per pixel, every row zero. The
 * file is tiny (zeros deflate ~1000:1); decoding it would take width × height pixels of memory.
 */
export function singleColourPng(width: number, height: number, rgb: [number, number, number] = [200, 30, 40]): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([1, 3, 0, 0, 0], 8); // bit depth 1, palette, deflate, no filter method, no interlace
  const rowBytes = 1 + Math.ceil(width / 8); // filter byte + packed pixels
  const idat = deflateSync(Buffer.alloc(rowBytes * height), { level: 9 });
  return Buffer.concat([PNG_SIGNATURE, pngChunk("IHDR", ihdr), pngChunk("PLTE", Buffer.from(rgb)), pngChunk("IDAT", idat), pngChunk("IEND", Buffer.alloc(0))]);
}

/** A small valid PNG whose IHDR is rewritten (CRC fixed) to claim `width`×`height`. */
export function pngClaiming(width: number, height: number): Buffer {
  const png = Buffer.from(singleColourPng(8, 8));
  png.writeUInt32BE(width, 16);
  png.writeUInt32BE(height, 20);
  png.writeUInt32BE(crc32(png.subarray(12, 29)), 29);
  return png;
}

/**
 * An animated GIF of `frames` frames, each covering the whole `width`×`height` canvas in one
 * colour (alternating, so no frame equals the one before). LZW packs a one-colour frame ~100:1,
 * so 10,000 frames of 160×160 take ~4 MB, under the byte limit, while decoding frame n means
 * decoding the n frames before it: 256 megapixels of LZW for the last one.
 */
export function manyFrameGif(frames: number, width = 160, height = 160): Buffer {
  const parts: Buffer[] = [];
  const header = Buffer.alloc(13);
  header.write("GIF89a", 0, "latin1");
  header.writeUInt16LE(width, 6);
  header.writeUInt16LE(height, 8);
  header[10] = 0x81; // global colour table, 4 entries (2 bits)
  parts.push(header, Buffer.from([0, 0, 0, 255, 40, 40, 40, 200, 40, 240, 240, 240]));
  // NETSCAPE2.0 loop extension
  parts.push(Buffer.from([0x21, 0xff, 0x0b, ...Buffer.from("NETSCAPE2.0", "latin1"), 0x03, 0x01, 0x00, 0x00, 0x00]));
  const encoded = [1, 2, 3].map((colour) => subBlocks(lzwEncode(new Uint8Array(width * height).fill(colour), 2)));
  const descriptor = Buffer.alloc(10);
  descriptor[0] = 0x2c;
  descriptor.writeUInt16LE(width, 5);
  descriptor.writeUInt16LE(height, 7);
  for (let f = 0; f < frames; f++) {
    // graphic control: disposal 1 (leave in place), delay 2 cs
    parts.push(Buffer.from([0x21, 0xf9, 0x04, 0x04, 0x02, 0x00, 0x00, 0x00]), descriptor, Buffer.from([2]), encoded[f % 3] ?? Buffer.alloc(0));
  }
  parts.push(Buffer.from([0x3b]));
  return Buffer.concat(parts);
}

/** GIF's variable-width LZW (codes packed LSB first), dictionary reset when it is full. */
function lzwEncode(indices: Uint8Array, minCodeSize: number): Buffer {
  const clear = 1 << minCodeSize;
  const end = clear + 1;
  let dict = new Map<number, number>();
  let next = end + 1;
  let width = minCodeSize + 1;
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  const emit = (code: number): void => {
    acc |= code << bits;
    bits += width;
    while (bits >= 8) {
      out.push(acc & 0xff);
      acc >>>= 8;
      bits -= 8;
    }
  };
  emit(clear);
  let prefix = indices[0] ?? 0;
  for (let i = 1; i < indices.length; i++) {
    const pixel = indices[i] ?? 0;
    const key = prefix * 256 + pixel;
    const known = dict.get(key);
    if (known !== undefined) {
      prefix = known;
      continue;
    }
    emit(prefix);
    if (next < 4096) {
      dict.set(key, next++);
      if (next > 1 << width && width < 12) width++;
    } else {
      emit(clear);
      dict = new Map();
      next = end + 1;
      width = minCodeSize + 1;
    }
    prefix = pixel;
  }
  emit(prefix);
  emit(end);
  if (bits > 0) out.push(acc & 0xff);
  return Buffer.from(out);
}

/** Image data as GIF sub-blocks (at most 255 bytes each) and the terminator. */
function subBlocks(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0; at < data.length; at += 255) {
    const block = data.subarray(at, at + 255);
    parts.push(Buffer.from([block.length]), block);
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

/** An SVG that, if rendered, would fetch an image from `canaryUrl`. */
export function svgReferencing(canaryUrl: string): Buffer {
  return Buffer.from(
    `<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="64">` +
      `<image href="${canaryUrl}" xlink:href="${canaryUrl}" width="64" height="64"/></svg>\n`,
  );
}

/** A minimal one-page PDF (a red square). */
export function tinyPdf(): Buffer {
  const objects = [
    "<< /Type /Catalog /Pages 2 0 R >>",
    "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 64 64] /Contents 4 0 R >>",
    "<< /Length 24 >>\nstream\n1 0 0 rg 0 0 64 64 re f\nendstream",
  ];
  let body = "%PDF-1.4\n";
  const offsets: number[] = [];
  objects.forEach((object, i) => {
    offsets.push(body.length);
    body += `${i + 1} 0 obj\n${object}\nendobj\n`;
  });
  const xref = body.length;
  body += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const offset of offsets) body += `${String(offset).padStart(10, "0")} 00000 n \n`;
  body += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(body, "latin1");
}

/** A minimal Photoshop document: 8×8 RGB, raw image data. */
export function tinyPsd(): Buffer {
  const header = Buffer.alloc(26);
  header.write("8BPS", 0, "latin1");
  header.writeUInt16BE(1, 4); // version
  header.writeUInt16BE(3, 12); // channels
  header.writeUInt32BE(8, 14); // height
  header.writeUInt32BE(8, 18); // width
  header.writeUInt16BE(8, 22); // depth
  header.writeUInt16BE(3, 24); // RGB
  const empty = Buffer.alloc(4); // colour mode data, resources, layers: all empty
  const compression = Buffer.from([0, 0]); // raw
  return Buffer.concat([header, empty, empty, empty, compression, Buffer.alloc(3 * 8 * 8, 0x80)]);
}

/** `size` bytes that start like a PNG: what an oversized upload looks like to the byte limit. */
export function oversizedPng(size: number): Buffer {
  const bytes = seededBytes(size, 3);
  PNG_SIGNATURE.copy(bytes, 0);
  return bytes;
}
