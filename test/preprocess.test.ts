import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { parsePreprocessorConfig, preprocessImage } from "../src/clip/preprocess.js";
import {
  centerCropPlan,
  hwcToNormalizedChw,
  normalizeValue,
  resizeBicubicRegion,
  resizeOutputSize,
  type NormalizeOptions,
} from "../src/clip/preprocess-math.js";
import type { PreprocessConfig } from "../src/clip/types.js";
import { ClipguardError } from "../src/shared/errors.js";
import { palettePng } from "./fixtures/images/make-png.js";

type RGB = readonly [number, number, number];

const MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
const STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** openai/clip-vit-base-patch32's preprocessing. */
const CLIP: PreprocessConfig = {
  shortestEdge: 224,
  cropHeight: 224,
  cropWidth: 224,
  doCenterCrop: true,
  doResize: true,
  doNormalize: true,
  rescaleFactor: 1 / 255,
  imageMean: MEAN,
  imageStd: STD,
};

/** Leaves pixel values as they are (0–255), so tests can read colours back. */
const IDENTITY = { doNormalize: false, rescaleFactor: 1 } as const;

/** An image from a per-pixel colour function, 3 or 4 channels. */
function rawImage(width: number, height: number, pixel: (x: number, y: number) => readonly number[], channels: 3 | 4 = 3) {
  const data = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set(pixel(x, y).slice(0, channels), (y * width + x) * channels);
  }
  return sharp(data, { raw: { width, height, channels } });
}

const solidPng = (width: number, height: number, colour: readonly number[], channels: 3 | 4 = 3) =>
  rawImage(width, height, () => colour, channels).png().toBuffer();

/** Pixel (x, y) of a CHW result as [r, g, b]. */
function pixelAt(pixels: Float32Array, width: number, height: number, x: number, y: number): number[] {
  const plane = width * height;
  return [0, 1, 2].map((c) => pixels[c * plane + y * width + x] ?? Number.NaN);
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<ClipguardError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ClipguardError);
  expect((err as ClipguardError).code).toBe(code);
  return err as ClipguardError;
}

describe("resizeOutputSize (HF get_resize_output_image_size)", () => {
  it.each([
    // width, height, shortest edge → width, height; long = int(shortest * long / short)
    { w: 640, h: 427, s: 224, out: [335, 224], why: "landscape: int(224*640/427) = int(335.74)" },
    { w: 427, h: 640, s: 224, out: [224, 335], why: "portrait" },
    { w: 300, h: 300, s: 224, out: [224, 224], why: "square" },
    { w: 451, h: 300, s: 224, out: [336, 224], why: "int(336.75) truncates, does not round" },
    { w: 600, h: 400, s: 224, out: [336, 224], why: "exact 336" },
    { w: 1000, h: 999, s: 224, out: [224, 224], why: "int(224.22)" },
    { w: 1, h: 3, s: 224, out: [224, 672], why: "enlarging" },
    { w: 7, h: 5, s: 3, out: [4, 3], why: "odd sizes: int(3*7/5) = int(4.2)" },
    { w: 5, h: 7, s: 2, out: [2, 2], why: "int(2*7/5) = int(2.8)" },
  ])("$w×$h → $out ($why)", ({ w, h, s, out }) => {
    expect(resizeOutputSize(w, h, s)).toEqual({ width: out[0], height: out[1] });
  });

  it("refuses non-positive sizes", () => {
    expect(() => resizeOutputSize(0, 10, 224)).toThrow(RangeError);
  });
});

describe("centerCropPlan (HF center_crop)", () => {
  it.each([
    { w: 336, h: 224, cw: 224, ch: 224, src: [56, 0], dst: [0, 0], copy: [224, 224] },
    { w: 335, h: 224, cw: 224, ch: 224, src: [55, 0], dst: [0, 0], copy: [224, 224] }, // (335-224)//2 = 55
    { w: 7, h: 5, cw: 4, ch: 4, src: [1, 0], dst: [0, 0], copy: [4, 4] },
    // smaller than the crop: padded, image placed at ceil((crop - size) / 2)
    { w: 100, h: 50, cw: 224, ch: 224, src: [0, 0], dst: [62, 87], copy: [100, 50] },
    { w: 225, h: 223, cw: 224, ch: 224, src: [0, 0], dst: [0, 1], copy: [224, 223] },
    { w: 1, h: 1, cw: 4, ch: 4, src: [0, 0], dst: [2, 2], copy: [1, 1] }, // (1-4)//2 = -2, pad ceil(3/2) = 2
  ])("$w×$h cropped to $cw×$ch", ({ w, h, cw, ch, src, dst, copy }) => {
    expect(centerCropPlan(w, h, cw, ch)).toEqual({
      outWidth: cw,
      outHeight: ch,
      srcLeft: src[0],
      srcTop: src[1],
      dstLeft: dst[0],
      dstTop: dst[1],
      copyWidth: copy[0],
      copyHeight: copy[1],
    });
  });
});

describe("normalization arithmetic", () => {
  const clip: NormalizeOptions = { rescaleFactor: 1 / 255, doNormalize: true, mean: MEAN, std: STD };

  it.each([
    // (v/255 - mean) / std in float32, as numpy computes it in CLIPImageProcessor
    { v: 255, c: 0, expected: 1.9303361177444458 }, // (1 - 0.48145466) / 0.26862954
    { v: 0, c: 1, expected: -1.7520971298217773 }, // -0.4578275 / 0.26130258
    { v: 0, c: 2, expected: -1.480219841003418 }, // -0.40821073 / 0.27577711
    { v: 200, c: 0, expected: 1.12742280960083 },
    { v: 100, c: 1, expected: -0.2513202726840973 },
    { v: 50, c: 2, expected: -0.7692164778709412 },
  ] as const)("value $v in channel $c → $expected", ({ v, c, expected }) => {
    expect(normalizeValue(v, c, clip)).toBe(expected);
  });

  it("rescales only when do_normalize is false", () => {
    expect(normalizeValue(51, 0, { ...clip, doNormalize: false })).toBe(Math.fround(0.2));
  });

  it("lays out R, G and B planes (CHW) from interleaved RGB (HWC)", () => {
    const rgb = Uint8Array.from([10, 20, 30, 40, 50, 60]); // 2×1: (10,20,30) (40,50,60)
    const out = hwcToNormalizedChw(rgb, 2, 1, centerCropPlan(2, 1, 2, 1), { rescaleFactor: 1, doNormalize: false, mean: [0, 0, 0], std: [1, 1, 1] });
    expect(Array.from(out)).toEqual([10, 40, 20, 50, 30, 60]);
  });

  it("pads with the normalized value of black", () => {
    const out = hwcToNormalizedChw(Uint8Array.from([255, 255, 255]), 1, 1, centerCropPlan(1, 1, 3, 1), clip);
    const black = [0, 1, 2].map((c) => normalizeValue(0, c as 0 | 1 | 2, clip));
    expect(Array.from(out)).toEqual([black[0], normalizeValue(255, 0, clip), black[0], black[1], normalizeValue(255, 1, clip), black[1], black[2], normalizeValue(255, 2, clip), black[2]]);
  });
});

describe("resizeBicubicRegion (PIL bicubic, a = -0.5)", () => {
  const grey = (values: number[]) => Uint8Array.from(values.flatMap((v) => [v, v, v]));
  const first = (rgb: Uint8Array) => Array.from(rgb).filter((_, i) => i % 3 === 0);

  it("enlarges [0, 255] to 4 pixels as [0, 53, 202, 255]", () => {
    // centre 0.75: taps f(-0.25) = 0.8671875 and f(0.75) = 0.2265625, normalized → 255 × 0.2071 = 52.8
    expect(first(resizeBicubicRegion(grey([0, 255]), 2, 1, 4, 1, { left: 0, top: 0, width: 4, height: 1 }))).toEqual([0, 53, 202, 255]);
  });

  it("shrinks [0, 255, 0] to 2 pixels as [99, 99] (support widened by the scale)", () => {
    // centre 0.75, scale 1.5: taps f(-1/6) = 0.9375, f(0.5) = 0.5625, f(7/6) = -0.0579; 255 × 0.5625/1.4421 = 99.5
    expect(first(resizeBicubicRegion(grey([0, 255, 0]), 3, 1, 2, 1, { left: 0, top: 0, width: 2, height: 1 }))).toEqual([99, 99]);
  });

  it("computes a region equal to the same cut of the full result", () => {
    const rgb = Uint8Array.from({ length: 5 * 4 * 3 }, (_, i) => (i * 37) % 256);
    const full = resizeBicubicRegion(rgb, 5, 4, 11, 9, { left: 0, top: 0, width: 11, height: 9 });
    const part = resizeBicubicRegion(rgb, 5, 4, 11, 9, { left: 3, top: 2, width: 4, height: 5 });
    const cut: number[] = [];
    for (let y = 2; y < 7; y++) cut.push(...full.subarray((y * 11 + 3) * 3, (y * 11 + 7) * 3));
    expect(Array.from(part)).toEqual(cut);
  });
});

describe("preprocessImage", () => {
  it("turns a solid colour into exactly (v/255 - mean)/std per channel, CHW at the crop size", async () => {
    const result = await preprocessImage(await solidPng(300, 200, [200, 100, 50]), CLIP);
    expect(result).toMatchObject({ width: 300, height: 200, format: "png", outputWidth: 224, outputHeight: 224 });
    expect(result.pixels).toBeInstanceOf(Float32Array);
    expect(result.pixels.length).toBe(3 * 224 * 224);
    const plane = 224 * 224;
    const expected = [1.12742280960083, -0.2513202726840973, -0.7692164778709412];
    for (let c = 0; c < 3; c++) {
      expect(new Set(result.pixels.subarray(c * plane, (c + 1) * plane))).toEqual(new Set([expected[c]]));
    }
  });

  it.each([
    { w: 640, h: 427, s: 224, out: [335, 224] },
    { w: 427, h: 640, s: 224, out: [224, 335] },
    { w: 300, h: 300, s: 224, out: [224, 224] },
    { w: 7, h: 5, s: 3, out: [4, 3] },
    { w: 20, h: 30, s: 45, out: [45, 67] }, // enlarging: int(45*30/20) = 67
  ])("resizes $w×$h to $out without a crop", async ({ w, h, s, out }) => {
    const config = { ...CLIP, shortestEdge: s, doCenterCrop: false };
    const result = await preprocessImage(await solidPng(w, h, [1, 2, 3]), config);
    expect([result.outputWidth, result.outputHeight]).toEqual(out);
    expect(result.pixels.length).toBe(3 * (out[0] ?? 0) * (out[1] ?? 0));
  });

  it("center-crops the middle columns", async () => {
    // 9×3 in thirds: red | green | blue
    const thirds = [[255, 0, 0], [0, 255, 0], [0, 0, 255]] as const;
    const png = await rawImage(9, 3, (x) => thirds[Math.floor(x / 3)] ?? [0, 0, 0]).png().toBuffer();
    const config = { ...CLIP, ...IDENTITY, doResize: false, cropWidth: 3, cropHeight: 3 };
    const middle = await preprocessImage(png, config);
    for (let x = 0; x < 3; x++) expect(pixelAt(middle.pixels, 3, 3, x, 1)).toEqual([0, 255, 0]);
    // crop 5 wide: left = (9 - 5) // 2 = 2 → columns 2..6
    const wider = await preprocessImage(png, { ...config, cropWidth: 5 });
    const columns = [0, 1, 2, 3, 4].map((x) => pixelAt(wider.pixels, 5, 3, x, 0));
    expect(columns).toEqual([[255, 0, 0], [0, 255, 0], [0, 255, 0], [0, 255, 0], [0, 0, 255]]);
  });

  it("center-crops a 672×224 image in thirds to exactly its green middle", async () => {
    const png = await rawImage(672, 224, (x) => (x < 224 ? [255, 0, 0] : x < 448 ? [0, 255, 0] : [0, 0, 255])).png().toBuffer();
    const result = await preprocessImage(png, { ...CLIP, ...IDENTITY });
    expect(result.width).toBe(672);
    for (const x of [0, 111, 223]) expect(pixelAt(result.pixels, 224, 224, x, 100)).toEqual([0, 255, 0]);
  });

  it("pads an image smaller than the crop with black, centred at ceil((crop - size) / 2)", async () => {
    const result = await preprocessImage(await solidPng(2, 1, [255, 255, 255]), { ...CLIP, ...IDENTITY, doResize: false, cropWidth: 4, cropHeight: 4 });
    const grid = Array.from({ length: 4 }, (_, y) => Array.from({ length: 4 }, (_, x) => pixelAt(result.pixels, 4, 4, x, y)[0]));
    // rows: (1 - 4)//2 = -2 → placed at row 2; columns: (2 - 4)//2 = -1 → placed at column 1
    expect(grid).toEqual([
      [0, 0, 0, 0],
      [0, 0, 0, 0],
      [0, 255, 255, 0],
      [0, 0, 0, 0],
    ]);
  });

  describe("EXIF orientation", () => {
    // A 2×1 image: red | blue, stored with an orientation tag
    const red = [255, 0, 0];
    const blue = [0, 0, 255];
    it.each([
      { orientation: 1, size: [2, 1], pixels: [red, blue] },
      { orientation: 3, size: [2, 1], pixels: [blue, red] }, // 180°
      { orientation: 6, size: [1, 2], pixels: [red, blue] }, // 90° clockwise: left edge goes to the top
      { orientation: 8, size: [1, 2], pixels: [blue, red] }, // 90° counter-clockwise: left edge goes to the bottom
    ])("applies orientation $orientation", async ({ orientation, size, pixels }) => {
      const png = await rawImage(2, 1, (x) => (x === 0 ? red : blue)).withMetadata({ orientation }).png().toBuffer();
      const [w, h] = size as [number, number];
      const result = await preprocessImage(png, { ...CLIP, ...IDENTITY, doResize: false, cropWidth: w, cropHeight: h });
      expect([result.width, result.height]).toEqual(size);
      const read = w === 2 ? [pixelAt(result.pixels, 2, 1, 0, 0), pixelAt(result.pixels, 2, 1, 1, 0)] : [pixelAt(result.pixels, 1, 2, 0, 0), pixelAt(result.pixels, 1, 2, 0, 1)];
      expect(read).toEqual(pixels);
    });

    it("rotates a camera JPEG (orientation 6) before resizing", async () => {
      // 64×32 landscape: red left half, blue right half → displayed 32×64: red top, blue bottom
      const jpeg = await rawImage(64, 32, (x) => (x < 32 ? red : blue)).withMetadata({ orientation: 6 }).jpeg({ quality: 100 }).toBuffer();
      const result = await preprocessImage(jpeg, { ...CLIP, ...IDENTITY, shortestEdge: 16, cropWidth: 16, cropHeight: 32 });
      expect([result.width, result.height]).toEqual([32, 64]);
      const top = pixelAt(result.pixels, 16, 32, 8, 4);
      const bottom = pixelAt(result.pixels, 16, 32, 8, 28);
      expect(top[0]).toBeGreaterThan(240);
      expect(top[2]).toBeLessThan(15);
      expect(bottom[2]).toBeGreaterThan(240);
      expect(bottom[0]).toBeLessThan(15);
    });
  });

  describe("colour conversion to 3-channel RGB", () => {
    const expectEveryPixel = (result: { pixels: Float32Array }, rgb: RGB) => {
      const plane = result.pixels.length / 3;
      for (let c = 0; c < 3; c++) expect(new Set(result.pixels.subarray(c * plane, (c + 1) * plane))).toEqual(new Set([rgb[c]]));
    };

    it.each([
      { case: "no resize", size: 8, config: { ...CLIP, ...IDENTITY, doResize: false, cropWidth: 8, cropHeight: 8 } },
      { case: "shrinking", size: 300, config: { ...CLIP, ...IDENTITY } },
      { case: "enlarging", size: 100, config: { ...CLIP, ...IDENTITY } },
    ])("drops alpha without compositing: RGBA with alpha 0 keeps its RGB ($case)", async ({ size, config }) => {
      const result = await preprocessImage(await solidPng(size, size, [10, 200, 30, 0], 4), config);
      expectEveryPixel(result, [10, 200, 30]);
    });

    it("keeps each pixel's own colour under partial transparency", async () => {
      const png = await rawImage(300, 300, (x) => (x % 2 ? [200, 0, 0, 0] : [200, 0, 0, 255]), 4).png().toBuffer();
      const result = await preprocessImage(png, { ...CLIP, ...IDENTITY });
      expectEveryPixel(result, [200, 0, 0]);
    });

    it("repeats grey into three equal channels", async () => {
      const grey = await sharp(Buffer.alloc(16, 77), { raw: { width: 4, height: 4, channels: 1 } }).toColourspace("b-w").png().toBuffer();
      expect((await sharp(grey).metadata()).channels).toBe(1);
      const result = await preprocessImage(grey, CLIP);
      expectEveryPixel(result, [0, 1, 2].map((c) => normalizeValue(77, c as 0 | 1 | 2, { rescaleFactor: 1 / 255, doNormalize: true, mean: MEAN, std: STD })) as unknown as RGB);
    });

    it("drops the alpha of grey + alpha", async () => {
      const png = await sharp(Buffer.from([77, 0, 77, 0, 77, 0, 77, 0]), { raw: { width: 2, height: 2, channels: 2 } }).toColourspace("b-w").png().toBuffer();
      expect((await sharp(png).metadata()).channels).toBe(2);
      expectEveryPixel(await preprocessImage(png, { ...CLIP, ...IDENTITY, doResize: false, cropWidth: 2, cropHeight: 2 }), [77, 77, 77]);
    });

    it("expands a palette PNG, keeping the colour of a fully transparent entry", async () => {
      // palette: 0 = red (tRNS alpha 0), 1 = blue (opaque); image 2×1: [0, 1]
      const png = palettePng(2, 1, [[255, 0, 0], [0, 0, 255]], [0, 255], [0, 1]);
      const result = await preprocessImage(png, { ...CLIP, ...IDENTITY, doResize: false, cropWidth: 2, cropHeight: 1 });
      expect([pixelAt(result.pixels, 2, 1, 0, 0), pixelAt(result.pixels, 2, 1, 1, 0)]).toEqual([[255, 0, 0], [0, 0, 255]]);
    });

    it("reduces a 16-bit PNG to 8 bits (high byte)", async () => {
      const u16 = new Uint16Array([65535, 32768, 1799, 0, 1000, 60000]); // → 255 128 7 | 0 3 234
      const png = await sharp(u16, { raw: { width: 2, height: 1, channels: 3 } }).toColourspace("rgb16").png().toBuffer();
      expect((await sharp(png).metadata()).depth).toBe("ushort");
      const result = await preprocessImage(png, { ...CLIP, ...IDENTITY, doResize: false, cropWidth: 2, cropHeight: 1 });
      expect([pixelAt(result.pixels, 2, 1, 0, 0), pixelAt(result.pixels, 2, 1, 1, 0)]).toEqual([[255, 128, 7], [0, 3, 234]]);
    });

    it("converts a CMYK JPEG to sRGB", async () => {
      const jpeg = await rawImage(16, 16, () => [200, 100, 50]).toColourspace("cmyk").jpeg({ quality: 100 }).toBuffer();
      expect((await sharp(jpeg).metadata()).space).toBe("cmyk");
      const result = await preprocessImage(jpeg, { ...CLIP, ...IDENTITY, doResize: false, cropWidth: 16, cropHeight: 16 });
      const centre = pixelAt(result.pixels, 16, 16, 8, 8);
      [200, 100, 50].forEach((v, c) => expect(Math.abs((centre[c] ?? 0) - v)).toBeLessThanOrEqual(6));
    });
  });

  it("uses the first frame of an animated GIF", async () => {
    const frame = (rgb: RGB) => solidPng(8, 8, rgb);
    const gif = await sharp([await frame([255, 0, 0]), await frame([0, 0, 255])], { join: { animated: true } }).gif().toBuffer();
    expect((await sharp(gif).metadata()).pages).toBe(2);
    const result = await preprocessImage(gif, { ...CLIP, ...IDENTITY, doResize: false, cropWidth: 8, cropHeight: 8 });
    expect(pixelAt(result.pixels, 8, 8, 4, 4)).toEqual([255, 0, 0]);
  });

  it("preprocesses the 24-frame sample GIF at its frame size", async () => {
    const fs = await import("node:fs/promises");
    const gif = await fs.readFile(new URL("./fixtures/images/no_time_for_that_tiny.gif", import.meta.url));
    const result = await preprocessImage(gif, CLIP);
    expect(result).toMatchObject({ format: "gif", width: 14, height: 25, outputWidth: 224, outputHeight: 224 });
    expect(result.pixels.every(Number.isFinite)).toBe(true);
  });

  it("refuses an aspect ratio that would resize past the pixel limit", async () => {
    // 1×1000 → 224×224000 = 50 M pixels > 40 M
    const err = await expectCode(preprocessImage(await solidPng(1, 1000, [0, 0, 0]), CLIP), "CLIPGUARD_E_IMAGE_PIXELS");
    expect(err.message).toMatch(/224x224000/);
  });
});

describe("parsePreprocessorConfig", () => {
  const legacy = {
    crop_size: 224,
    do_center_crop: true,
    do_normalize: true,
    do_resize: true,
    feature_extractor_type: "CLIPFeatureExtractor",
    image_mean: MEAN,
    image_std: STD,
    resample: 3,
    size: 224,
  };
  const current = {
    crop_size: { height: 224, width: 224 },
    do_center_crop: true,
    do_convert_rgb: true,
    do_normalize: true,
    do_rescale: true,
    do_resize: true,
    image_mean: MEAN,
    image_processor_type: "CLIPImageProcessor",
    image_std: STD,
    resample: 3,
    rescale_factor: 0.00392156862745098,
    size: { shortest_edge: 224 },
  };

  it.each([
    { name: "legacy CLIPFeatureExtractor config", json: legacy, expected: CLIP },
    { name: "CLIPImageProcessor config", json: current, expected: { ...CLIP, rescaleFactor: 0.00392156862745098 } },
    { name: "empty object (CLIPImageProcessor defaults)", json: {}, expected: CLIP },
    {
      name: "ViT-L/14-336 sizes",
      json: { ...current, size: { shortest_edge: 336 }, crop_size: { height: 336, width: 336 } },
      expected: { ...CLIP, shortestEdge: 336, cropHeight: 336, cropWidth: 336, rescaleFactor: 0.00392156862745098 },
    },
    { name: "do_rescale false", json: { do_rescale: false, rescale_factor: 0.5 }, expected: { ...CLIP, rescaleFactor: 1 } },
    { name: "scalar mean and std", json: { image_mean: 0.5, image_std: 0.5 }, expected: { ...CLIP, imageMean: [0.5, 0.5, 0.5], imageStd: [0.5, 0.5, 0.5] } },
    { name: "no normalize, no resize", json: { do_normalize: false, do_resize: false }, expected: { ...CLIP, doNormalize: false, doResize: false } },
  ])("reads a $name", ({ json, expected }) => {
    expect(parsePreprocessorConfig(json)).toEqual(expected);
  });

  it.each([
    { json: null, field: /\(root\)/ },
    { json: [], field: /\(root\)/ },
    { json: { size: "224" }, field: /size/ },
    { json: { size: { height: 224, width: 224 } }, field: /size: \{height, width\}/ },
    { json: { size: 0 }, field: /size/ },
    { json: { crop_size: { height: 224 } }, field: /crop_size/ },
    { json: { resample: 2 }, field: /resample: 2 \(bilinear\)/ },
    { json: { do_center_crop: false }, field: /do_center_crop/ },
    { json: { do_resize: "yes" }, field: /do_resize/ },
    { json: { image_mean: [0.5, 0.5] }, field: /image_mean/ },
    { json: { image_std: [0.5, 0, 0.5] }, field: /image_std/ },
    { json: { rescale_factor: -1 }, field: /rescale_factor/ },
  ])("refuses $json with CLIPGUARD_E_MODEL naming the field", ({ json, field }) => {
    let caught: unknown;
    try {
      parsePreprocessorConfig(json);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ClipguardError);
    expect((caught as ClipguardError).code).toBe("CLIPGUARD_E_MODEL");
    expect((caught as ClipguardError).message).toMatch(field);
  });
});
