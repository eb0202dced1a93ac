import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import sharp, { type Sharp } from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_DECODE_LIMITS, inspectImage, MULTI_PAGE_PIXEL_FACTOR } from "../src/clip/image-decode.js";
import { describeRefusedFormat, sniffImageFormat, type ImageFormat } from "../src/clip/image-format.js";
import { parsePreprocessorConfig, preprocessImage } from "../src/clip/preprocess.js";
import { ClipguardError, type ErrorCode } from "../src/shared/errors.js";
import { lyingHeaderPng } from "./fixtures/images/make-png.js";

const CLIP = parsePreprocessorConfig({});
const fixture = (name: string) => fs.readFile(new URL(`./fixtures/images/${name}`, import.meta.url));
const bytes = (...parts: Array<string | number[]>) =>
  Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "latin1") : Buffer.from(p))));

/** Deterministic noise, so "random bytes" never start with a magic number by chance. */
function noise(length: number, seed = 12345): Buffer {
  const out = Buffer.alloc(length);
  let s = seed;
  for (let i = 0; i < length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

const solid = (width: number, height: number) =>
  sharp({ create: { width, height, channels: 3, background: { r: 40, g: 120, b: 200 } } });

async function rejection(promise: Promise<unknown>): Promise<ClipguardError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ClipguardError);
  return err as ClipguardError;
}

describe("sniffImageFormat", () => {
  it.each<{ name: string; data: Buffer; format: ImageFormat | null }>([
    { name: "JPEG", data: bytes([0xff, 0xd8, 0xff, 0xe0]), format: "jpeg" },
    { name: "PNG", data: bytes([0x89], "PNG\r\n\x1a\n"), format: "png" },
    { name: "WebP", data: bytes("RIFF", [0, 0, 0, 0], "WEBPVP8 "), format: "webp" },
    { name: "GIF87a", data: bytes("GIF87a"), format: "gif" },
    { name: "GIF89a", data: bytes("GIF89a"), format: "gif" },
    { name: "TIFF little-endian", data: bytes("II", [42, 0]), format: "tiff" },
    { name: "TIFF big-endian", data: bytes("MM", [0, 42]), format: "tiff" },
    { name: "BigTIFF", data: bytes("II", [43, 0]), format: "tiff" },
    { name: "AVIF", data: bytes([0, 0, 0, 0x1c], "ftypavif", [0, 0, 0, 0], "avifmif1miaf"), format: "avif" },
    { name: "AVIF as a compatible brand", data: bytes([0, 0, 0, 0x18], "ftypmif1", [0, 0, 0, 0], "mif1avif"), format: "avif" },
    { name: "HEIC", data: bytes([0, 0, 0, 0x18], "ftypheic", [0, 0, 0, 0], "mif1heic"), format: null },
    { name: "WAV", data: bytes("RIFF", [0, 0, 0, 0], "WAVEfmt "), format: null },
    { name: "too short", data: bytes([0xff, 0xd8]), format: null },
  ])("$name → $format", ({ data, format }) => {
    expect(sniffImageFormat(data)).toBe(format);
  });
});

describe("refused inputs", () => {
  const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>';
  it.each<{ name: string; data: () => Promise<Buffer> | Buffer; code: ErrorCode; message: RegExp }>([
    { name: "zero bytes", data: () => Buffer.alloc(0), code: "CLIPGUARD_E_IMAGE_EMPTY", message: /zero bytes/ },
    { name: "random bytes", data: () => noise(4096), code: "CLIPGUARD_E_IMAGE_FORMAT", message: /not a recognised image format; allowed formats: JPEG, PNG/ },
    { name: "SVG", data: () => bytes(svg), code: "CLIPGUARD_E_IMAGE_FORMAT", message: /looks like SVG; allowed formats: JPEG, PNG, WebP, GIF, AVIF, TIFF/ },
    { name: "SVG with an XML prolog and BOM", data: () => bytes([0xef, 0xbb, 0xbf], `<?xml version="1.0"?>\n<!-- x -->\n${svg}`), code: "CLIPGUARD_E_IMAGE_FORMAT", message: /looks like SVG/ },
    { name: "PDF", data: () => bytes("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"), code: "CLIPGUARD_E_IMAGE_FORMAT", message: /looks like PDF/ },
    { name: "PSD", data: () => bytes("8BPS", [0, 1, 0, 0, 0, 0, 0, 0]), code: "CLIPGUARD_E_IMAGE_FORMAT", message: /Photoshop/ },
    { name: "HEIC", data: () => bytes([0, 0, 0, 0x18], "ftypheic", [0, 0, 0, 0], "mif1heic"), code: "CLIPGUARD_E_IMAGE_FORMAT", message: /HEIC/ },
    { name: "BMP", data: () => bytes("BM", [0x46, 0, 0, 0, 0, 0, 0, 0, 0x36, 0, 0, 0]), code: "CLIPGUARD_E_IMAGE_FORMAT", message: /BMP/ },
    { name: "ICO", data: () => bytes([0, 0, 1, 0, 1, 0, 16, 16]), code: "CLIPGUARD_E_IMAGE_FORMAT", message: /ICO/ },
    { name: "JPEG XL", data: () => bytes([0xff, 0x0a, 0xfa, 0x7f]), code: "CLIPGUARD_E_IMAGE_FORMAT", message: /JPEG XL/ },
    { name: "HTML", data: () => bytes("<!DOCTYPE html>\n<html><body>not found</body></html>"), code: "CLIPGUARD_E_IMAGE_FORMAT", message: /looks like HTML/ },
    { name: "plain text", data: () => bytes("hello, this is not an image\n"), code: "CLIPGUARD_E_IMAGE_FORMAT", message: /looks like text/ },
    { name: "truncated.jpg", data: () => fixture("truncated.jpg"), code: "CLIPGUARD_E_IMAGE_DECODE", message: /JPEG header could not be read/ },
    { name: "a PNG cut in half", data: async () => (p => p.subarray(0, p.length >> 1))(await solid(64, 64).png({ compressionLevel: 0 }).toBuffer()), code: "CLIPGUARD_E_IMAGE_DECODE", message: /could not be decoded/ },
    { name: "a JPEG cut in half", data: async () => (j => j.subarray(0, j.length >> 1))(await fs.readFile(new URL("../examples/images/rocket.jpg", import.meta.url))), code: "CLIPGUARD_E_IMAGE_DECODE", message: /could not be decoded/ },
    { name: "a PNG signature followed by noise", data: () => bytes([0x89], "PNG\r\n\x1a\n", [...noise(64)]), code: "CLIPGUARD_E_IMAGE_DECODE", message: /PNG header could not be read/ },
    { name: "a PNG header claiming 100000×100000", data: () => lyingHeaderPng(100_000, 100_000), code: "CLIPGUARD_E_IMAGE_PIXELS", message: /100000x100000 \(10000000000 pixels\); the limit is 40000000/ },
  ])("$name → $code", async ({ data, code, message }) => {
    const err = await rejection(preprocessImage(await data(), CLIP));
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
    expect(err.retryable).toBe(false);
  });

  it("refuses bytes over the byte limit before looking at them", async () => {
    const png = await solid(8, 8).png().toBuffer();
    const err = await rejection(inspectImage(png, { ...DEFAULT_DECODE_LIMITS, maxBytes: png.length - 1 }));
    expect(err.code).toBe("CLIPGUARD_E_IMAGE_TOO_LARGE");
    expect(err.message).toMatch(new RegExp(`${png.length} bytes; the limit is ${png.length - 1}`));
  });

  it("refuses an image over the pixel limit from its header", async () => {
    const png = await solid(40, 30).png().toBuffer();
    const err = await rejection(preprocessImage(png, CLIP, { ...DEFAULT_DECODE_LIMITS, maxPixels: 1199 }));
    expect(err.code).toBe("CLIPGUARD_E_IMAGE_PIXELS");
    expect(err.message).toMatch(/40x30 \(1200 pixels\); the limit is 1199/);
    await expect(inspectImage(png, { ...DEFAULT_DECODE_LIMITS, maxPixels: 1200 })).resolves.toMatchObject({ width: 40, height: 30 });
  });

  it(`caps all frames of an animation at ${MULTI_PAGE_PIXEL_FACTOR} × maxPixels`, async () => {
    const gif = await fixture("no_time_for_that_tiny.gif"); // 24 frames of 14×25 = 8400 pixels
    const err = await rejection(inspectImage(gif, { ...DEFAULT_DECODE_LIMITS, maxPixels: 800 }));
    expect(err.code).toBe("CLIPGUARD_E_IMAGE_PIXELS");
    expect(err.message).toMatch(/24 frames of 14x25 \(8400 pixels in all\)/);
    await expect(inspectImage(gif, { ...DEFAULT_DECODE_LIMITS, maxPixels: 840 })).resolves.toMatchObject({ pages: 24 });
  });

  describe("an SVG that links an external image", () => {
    let server: http.Server;
    let requests = 0;
    let url = "";
    beforeAll(async () => {
      server = http.createServer((_req, res) => {
        requests++;
        res.writeHead(404).end();
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/pixel.png`;
    });
    afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

    it("is refused without fetching the link", async () => {
      const linked =
        `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">` +
        `<image href="${url}" xlink:href="${url}" width="10" height="10"/></svg>`;
      const err = await rejection(preprocessImage(bytes(linked), CLIP));
      expect(err.code).toBe("CLIPGUARD_E_IMAGE_FORMAT");
      expect(err.message).toMatch(/looks like SVG/);
      expect(requests).toBe(0);
    });
  });

  it("names the refused type even when it is not an image at all", () => {
    expect(describeRefusedFormat(bytes([0x50, 0x4b, 0x03, 0x04]))).toBe("a ZIP archive");
    expect(describeRefusedFormat(noise(64))).toBeNull();
  });
});

// AVIF needs an AV1 encoder in sharp's libvips build (the prebuilt binaries ship aom).
const avifEncodable = await solid(8, 8)
  .avif()
  .toBuffer()
  .then(
    () => true,
    () => false,
  );

describe("accepted formats", () => {
  const encoders: Record<Exclude<ImageFormat, "avif">, (s: Sharp) => Sharp> = {
    jpeg: (s) => s.jpeg(),
    png: (s) => s.png(),
    webp: (s) => s.webp({ lossless: true }),
    gif: (s) => s.gif(),
    tiff: (s) => s.tiff({ compression: "lzw" }),
  };

  async function expectAccepted(format: ImageFormat, data: Buffer) {
    expect(sniffImageFormat(data)).toBe(format);
    expect(await inspectImage(data)).toMatchObject({ format, width: 60, height: 40, pages: 1 });
    const result = await preprocessImage(data, CLIP);
    expect(result).toMatchObject({ format, width: 60, height: 40, outputWidth: 224, outputHeight: 224 });
  }

  it.each(Object.keys(encoders) as Array<keyof typeof encoders>)("%s is inspected and preprocessed", async (format) => {
    await expectAccepted(format, await encoders[format](solid(60, 40)).toBuffer());
  });

  // The fixture is made by sharp, which needs an AV1 encoder in its libvips build (the prebuilt
  // binaries ship aom); without one there is no AVIF to test with.
  it.skipIf(!avifEncodable)("avif is inspected and preprocessed", async () => {
    await expectAccepted("avif", await solid(60, 40).avif({ lossless: true }).toBuffer());
  });

  it("accepts a JPEG that libjpeg only warns about (extraneous bytes before a marker), as PIL does", async () => {
    const jpeg = await fs.readFile(new URL("../examples/images/rocket.jpg", import.meta.url));
    const sos = jpeg.indexOf(Buffer.from([0xff, 0xda]));
    const warned = Buffer.concat([jpeg.subarray(0, sos), Buffer.from([0x12, 0x34, 0x56]), jpeg.subarray(sos)]);
    await expect(sharp(warned, { failOn: "warning" }).raw().toBuffer()).rejects.toThrow();
    await expect(preprocessImage(warned, CLIP)).resolves.toMatchObject({ format: "jpeg", width: 640, height: 427 });
  });

  it("reports the displayed size and the orientation tag", async () => {
    const jpeg = await solid(60, 40).withMetadata({ orientation: 6 }).jpeg().toBuffer();
    expect(await inspectImage(jpeg)).toEqual({ format: "jpeg", width: 40, height: 60, pages: 1, orientation: 6, hasAlpha: false });
  });

  it("reports frames and alpha of an animated GIF", async () => {
    expect(await inspectImage(await fixture("no_time_for_that_tiny.gif"))).toEqual({ format: "gif", width: 14, height: 25, pages: 24, hasAlpha: true });
  });
});
