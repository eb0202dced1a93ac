import { cp, rm } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClipModel } from "../src/clip/clip-model.js";
import { InferencePool } from "../src/clip/inference-pool.js";
import { ClipguardError } from "../src/shared/errors.js";
import { SeededRandom } from "../tools/onnx/seeded-random.js";
import { referenceImageEmbeds, referenceTextEmbeds } from "./support/clip-reference.js";
import { tempDir } from "./support/fixtures.js";
import {
  TINY_CLIP,
  TINY_CLIP_MASKED,
  TINY_IMAGE_SIZE,
  writeTinyClipModel,
  type TinyClipModel,
} from "./support/tiny-clip-model.js";

const PARITY = 1e-4;
const PADDING_INVARIANCE = 1e-5;
const IMAGE_VALUES = 3 * TINY_IMAGE_SIZE * TINY_IMAGE_SIZE;

/** Prompts of different lengths, so a batch of them is padded (one is longer than 77 tokens). */
const PROMPTS = [
  "a photo of a cat",
  "graphic violence, blood and gore",
  "A photo of  a CAT!",
  "",
  Array.from({ length: 90 }, (_, i) => `token${i}`).join(" "),
];

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  a.forEach((x, i) => {
    worst = Math.max(worst, Math.abs(x - (b[i] ?? Number.NaN)));
  });
  return worst;
}

function expectAllClose(actual: readonly Float32Array[], expected: readonly Float32Array[], tolerance: number): void {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((embedding, i) => {
    const other = expected[i];
    if (other === undefined) throw new Error(`no expected embedding ${i}`);
    expect(maxAbsDiff(embedding, other), `item ${i}`).toBeLessThan(tolerance);
  });
}

function normalized(v: Float32Array): Float32Array {
  const norm = Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));
  return v.map((x) => x / norm);
}

/** `count` CHW images with values in CLIP's normalized range, seeded. */
function randomPixels(count: number, seed: number): Float32Array {
  const random = new SeededRandom(seed);
  return Float32Array.from({ length: count * IMAGE_VALUES }, () => random.uniformIn(-1.8, 2.1));
}

function defined<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`missing ${what}`);
  return value;
}

function imageAt(pixels: Float32Array, index: number): Float32Array {
  return pixels.slice(index * IMAGE_VALUES, (index + 1) * IMAGE_VALUES);
}

/** The padded rows and masks the tokenizer gives the text tower, as plain numbers. */
function tokenRows(model: ClipModel, texts: readonly string[]): { ids: number[][]; mask: number[][] } {
  const batch = model.tokenizer.encodeBatch(texts);
  const rowsOf = (data: BigInt64Array) =>
    Array.from({ length: batch.batch }, (_, b) => Array.from(data.subarray(b * batch.sequence, (b + 1) * batch.sequence), Number));
  return { ids: rowsOf(batch.ids), mask: rowsOf(batch.attentionMask) };
}

describe("ClipModel on a tiny CLIP-shaped model", () => {
  let root: string;
  let tiny: TinyClipModel;
  let model: ClipModel;
  let quantized: ClipModel;

  beforeAll(async () => {
    root = await tempDir("clipguard-engine-");
    tiny = await writeTinyClipModel(path.join(root, "tiny"), { quantized: true });
    [model, quantized] = await Promise.all([ClipModel.load(tiny.dir), ClipModel.load(tiny.dir, { variant: "quantized" })]);
  });

  afterAll(async () => {
    await Promise.all([model?.release(), quantized?.release()]);
    if (root !== undefined) await rm(root, { recursive: true, force: true });
  });

  it("reads the model's name, variant and preprocessing size", () => {
    expect(model.info.name).toBe("clipguard-test/tiny-clip");
    expect(model.info.variant).toBe("fp32");
    expect(quantized.info.variant).toBe("quantized");
    expect(model.preprocess.cropHeight).toBe(TINY_IMAGE_SIZE);
    expect(model.preprocess.cropWidth).toBe(TINY_IMAGE_SIZE);
    expect(model.tokenizer.contextLength).toBe(77);
  });

  describe("image embeddings", () => {
    it("match the reference forward pass for one image", async () => {
      const pixels = randomPixels(1, 11);
      const expected = referenceImageEmbeds(tiny.weights, TINY_CLIP, pixels, 1).map(normalized);
      const actual = await model.embedPixels(pixels, 1);
      expectAllClose(actual, expected, PARITY);
      expect(actual[0]?.length).toBe(TINY_CLIP.embedDim);
    });

    it("match the reference for a batch of 3, each as it would be alone", async () => {
      const pixels = randomPixels(3, 12);
      const expected = referenceImageEmbeds(tiny.weights, TINY_CLIP, pixels, 3).map(normalized);
      const batch = await model.embedPixels(pixels, 3);
      expectAllClose(batch, expected, PARITY);
      const alone = await Promise.all([0, 1, 2].map(async (i) => (await model.embedPixels(imageAt(pixels, i), 1))[0] as Float32Array));
      expectAllClose(batch, alone, PADDING_INVARIANCE);
    });

    it("are L2-normalized", async () => {
      const [embedding] = await model.embedPixels(randomPixels(1, 13), 1);
      expect(Math.hypot(...(embedding ?? []))).toBeCloseTo(1, 5);
    });

    it("refuse a pixel buffer that does not hold `count` images of the crop size", async () => {
      const err = await model.embedPixels(randomPixels(2, 16), 3).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ClipguardError);
      expect((err as ClipguardError).code).toBe("CLIPGUARD_E_INTERNAL");
    });

    it("of the quantized variant match that variant's weights", async () => {
      const pixels = randomPixels(2, 14);
      const expected = referenceImageEmbeds(defined(tiny.quantized, "quantized weights"), TINY_CLIP_MASKED, pixels, 2).map(normalized);
      expectAllClose(await quantized.embedPixels(pixels, 2), expected, PARITY);
    });
  });

  describe("text embeddings", () => {
    it.each(PROMPTS.map((p) => [p.slice(0, 40), p]))("match the reference for %j alone", async (_label, prompt) => {
      const ids = [model.tokenizer.encode(prompt)];
      const expected = referenceTextEmbeds(tiny.weights, TINY_CLIP, ids).map(normalized);
      const actual = await model.embedTexts([prompt]);
      expectAllClose(actual, expected, PARITY);
      expect(actual[0]?.length).toBe(TINY_CLIP.embedDim);
    });

    it("match the reference for a padded batch of prompts of different lengths", async () => {
      const ids = PROMPTS.map((p) => model.tokenizer.encode(p));
      expect(new Set(ids.map((row) => row.length)).size).toBeGreaterThan(3);
      const expected = referenceTextEmbeds(tiny.weights, TINY_CLIP, ids).map(normalized);
      expectAllClose(await model.embedTexts(PROMPTS), expected, PARITY);
    });

    it("do not change with padding: a text alone equals the same text in a padded batch", async () => {
      const batch = await model.embedTexts(PROMPTS);
      const alone = await Promise.all(PROMPTS.map(async (p) => (await model.embedTexts([p]))[0] as Float32Array));
      expectAllClose(batch, alone, PADDING_INVARIANCE);
    });

    it("of the attention_mask variant are fed the mask and match its reference", async () => {
      const { ids, mask } = tokenRows(quantized, PROMPTS);
      expect(mask.some((row) => row.includes(0))).toBe(true);
      const expected = referenceTextEmbeds(defined(tiny.quantized, "quantized weights"), TINY_CLIP_MASKED, ids, mask).map(normalized);
      const batch = await quantized.embedTexts(PROMPTS);
      expectAllClose(batch, expected, PARITY);
      const alone = await Promise.all(PROMPTS.map(async (p) => (await quantized.embedTexts([p]))[0] as Float32Array));
      expectAllClose(batch, alone, PADDING_INVARIANCE);
    });

    it("differ between the variants", async () => {
      const [plain] = await model.embedTexts(["a photo of a cat"]);
      const [other] = await quantized.embedTexts(["a photo of a cat"]);
      expect(maxAbsDiff(defined(plain, "fp32 embedding"), defined(other, "quantized embedding"))).toBeGreaterThan(0.01);
    });

    it("cost nothing for an empty list", async () => {
      expect(await model.embedTexts([])).toEqual([]);
      expect(await model.embedPixels(new Float32Array(0), 0)).toEqual([]);
    });
  });

  describe("fingerprint", () => {
    it("is 16 hex characters and stable across loads", async () => {
      expect(model.fingerprint).toMatch(/^[0-9a-f]{16}$/);
      const again = await ClipModel.load(tiny.dir);
      try {
        expect(again.fingerprint).toBe(model.fingerprint);
        expect(again.info).toEqual(model.info);
      } finally {
        await again.release();
      }
    });

    it("differs between variants of one directory", () => {
      expect(quantized.fingerprint).toMatch(/^[0-9a-f]{16}$/);
      expect(quantized.fingerprint).not.toBe(model.fingerprint);
    });

    it("is the same for a copy of the directory at another path", async () => {
      const copy = path.join(root, "elsewhere", "copy-of-tiny");
      await cp(tiny.dir, copy, { recursive: true });
      const [copied, copiedQuantized] = await Promise.all([ClipModel.load(copy), ClipModel.load(copy, { variant: "quantized" })]);
      try {
        expect(copied.fingerprint).toBe(model.fingerprint);
        expect(copiedQuantized.fingerprint).toBe(quantized.fingerprint);
      } finally {
        await Promise.all([copied.release(), copiedQuantized.release()]);
      }
    });
  });

  describe("InferencePool with 2 threads", () => {
    let pool: InferencePool | undefined;

    afterAll(async () => {
      await pool?.close();
    });

    it("reports the model's info and preprocessing, and returns the same embeddings as ClipModel", async () => {
      pool = await InferencePool.start({ modelDir: tiny.dir, threads: 2 });
      expect(pool.info).toEqual(model.info);
      expect(pool.preprocess).toEqual(model.preprocess);
      expect(pool.contextLength).toBe(77);

      const pixels = randomPixels(3, 15);
      const [expectedTexts, expectedImages] = await Promise.all([model.embedTexts(PROMPTS), model.embedPixels(pixels.slice(), 3)]);
      // Several requests at once, so both threads answer some.
      const [texts, images, firstText, lastImage] = await Promise.all([
        pool.embedTexts(PROMPTS),
        pool.embedPixels(pixels.slice(), 3),
        pool.embedTexts(PROMPTS.slice(0, 1)),
        pool.embedPixels(imageAt(pixels, 2), 1),
      ]);
      expectAllClose(texts, expectedTexts, PADDING_INVARIANCE);
      expectAllClose(images, expectedImages, PADDING_INVARIANCE);
      expectAllClose(firstText, expectedTexts.slice(0, 1), PADDING_INVARIANCE);
      expectAllClose(lastImage, expectedImages.slice(2), PADDING_INVARIANCE);
    });

    it("loads the quantized variant with its fingerprint", async () => {
      const variantPool = await InferencePool.start({ modelDir: tiny.dir, variant: "quantized", threads: 1 });
      try {
        expect(variantPool.info).toEqual(quantized.info);
        expectAllClose(await variantPool.embedTexts(PROMPTS), await quantized.embedTexts(PROMPTS), PADDING_INVARIANCE);
      } finally {
        await variantPool.close();
      }
    });
  });
});
