import path from "node:path";
import { Redis } from "ioredis";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClipModel } from "../src/clip/clip-model.js";
import { CountingEmbedder } from "../src/clip/counting-embedder.js";
import { DEFAULT_SAMPLING, planCrops, seenRegion, tileGrid } from "../src/clip/crop-plan.js";
import { preprocessCrops } from "../src/clip/image-crops.js";
import { inspectImage } from "../src/clip/image-decode.js";
import { decodeFrameRgb, preprocessImage, preprocessRgbRegion } from "../src/clip/preprocess.js";
import { compilePolicies, parsePolicies, type CompiledPolicySet } from "../src/policies/index.js";
import { decodeEmbeddings, encodeEmbeddings, RedisImageEmbeddingCache } from "../src/policies/image-embedding-cache.js";
import { ImageModerator } from "../src/policies/image-moderator.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";

const DEMO = path.resolve("models/demo");
const CLIP_SIZE = { shortestEdge: 224, cropWidth: 224, cropHeight: 224 };
const SQUARE = { left: 1500, top: 150, size: 120 };

/** A grey 2000×400 banner with one small red square (120×120, under 2 % of the canvas) far from the centre. */
async function banner(shade = 128): Promise<Buffer> {
  const red = await sharp({ create: { width: SQUARE.size, height: SQUARE.size, channels: 3, background: { r: 220, g: 20, b: 30 } } })
    .png()
    .toBuffer();
  return sharp({ create: { width: 2000, height: 400, channels: 3, background: { r: shade, g: shade, b: shade } } })
    .composite([{ input: red, left: SQUARE.left, top: SQUARE.top }])
    .png()
    .toBuffer();
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs((a[i] ?? 0) - (b[i] ?? 0)));
  return worst;
}

describe("tile grid", () => {
  it.each([
    ["2000x400 banner: 7x1 squares as tall as the image", 2000, 400, 9, 7, [400, 400], [0, 267, 533, 800, 1067, 1333, 1600]],
    ["3000x3000: 3x3 squares overlapping by a quarter", 3000, 3000, 9, 9, [1200, 1200], [0, 900, 1800, 0, 900, 1800, 0, 900, 1800]],
    ["1000x800 photo: 3x3", 1000, 800, 9, 9, [400, 400], [0, 300, 600, 0, 300, 600, 0, 300, 600]],
    ["20000x300, beyond 7:1: one row of wider tiles", 20000, 300, 9, 9, [2858, 300], [0, 2143, 4286, 6428, 8571, 10714, 12857, 14999, 17142]],
    ["448x448 is not more than 2x the input size", 448, 448, 9, 0, [], []],
    ["tiles off (max below 2)", 3000, 3000, 1, 0, [], []],
  ])("%s", (_name, width, height, max, count, size, lefts) => {
    const tiles = tileGrid(width, height, 224, 2, max);
    expect(tiles).toHaveLength(count);
    if (count === 0) return;
    for (const t of tiles) {
      expect([t.width, t.height]).toEqual(size);
      expect(t.left + t.width).toBeLessThanOrEqual(width);
      expect(t.top + t.height).toBeLessThanOrEqual(height);
    }
    expect(tiles.map((t) => t.left)).toEqual(lefts);
    // the grid covers the image: first tile at the origin, last one at the far corner
    const last = tiles.at(-1)!;
    expect([tiles[0]!.left, tiles[0]!.top, last.left + last.width, last.top + last.height]).toEqual([0, 0, width, height]);
  });

  it("reports the part of a tile the model saw: all of a square, the middle of a wide one", () => {
    expect(seenRegion({ left: 1333, top: 0, width: 400, height: 400 }, CLIP_SIZE)).toEqual([1333, 0, 400, 400]);
    expect(seenRegion({ left: 100, top: 0, width: 900, height: 300 }, CLIP_SIZE)).toEqual([400, 0, 300, 300]);
  });

  it("caps tiles over all frames of an animation: the budget buys a finer grid first, then more tiled frames", () => {
    const crop = { cropWidth: 224, cropHeight: 224 };
    const plan = planCrops({ format: "gif", pages: 10, width: 2000, height: 400 }, crop, DEFAULT_SAMPLING, true);
    expect(plan.frames).toHaveLength(8);
    expect([plan.tiles.length, plan.tiledFrames]).toEqual([7, [0]]);
    // 224-pixel tiles (the input size) need 6x3 = 18 for 1000x500: 72 tiles reach 4 of the 8 frames
    const wide = planCrops({ format: "gif", pages: 10, width: 1000, height: 500 }, crop, { ...DEFAULT_SAMPLING, tilesMax: 72 }, true);
    expect([wide.tiles.length, wide.tiledFrames]).toEqual([18, [0, 3, 6, 9]]);
  });
});

describe("tiles in the engine (demo model)", () => {
  let model: ClipModel;
  let redis: Redis;
  const ns = testNamespace();
  const yaml = [
    "version: 1",
    "policies:",
    "  - id: red_whole",
    "    prompts: [a mostly red image]",
    "    thresholds: { review: 0.52, block: 0.9 }",
    "  - id: red_tiles",
    "    prompts: [a mostly red image]",
    "    thresholds: { review: 0.52, block: 0.9 }",
    "    tiles: true",
    "",
  ].join("\n");
  let compiled: CompiledPolicySet;
  const limits = { maxBytes: 1e7, maxPixels: 4e7 };

  beforeAll(async () => {
    model = await ClipModel.load(DEMO);
    compiled = await compilePolicies(parsePolicies(yaml, "tiles.yaml"), model);
    redis = new Redis(await testRedisUrl());
  });

  afterAll(async () => {
    await model.release();
    await cleanupNamespace(redis, ns);
    redis.disconnect();
  });

  it("preprocesses a tile exactly as the same pixels given as a whole image", async () => {
    const png = await banner();
    const info = await inspectImage(png);
    const rgb = await decodeFrameRgb(png, info, limits, 0);
    for (const tile of [
      { left: 1333, top: 0, width: 400, height: 400 },
      { left: 10, top: 20, width: 300, height: 100 }, // enlarged: PIL's resize in TypeScript
    ]) {
      const alone = await sharp(png).extract(tile).png().toBuffer();
      const expected = (await preprocessImage(alone, model.preprocess)).pixels;
      expect(await preprocessRgbRegion(rgb, info.width, info.height, tile, model.preprocess, limits)).toEqual(expected);
    }
  });

  it("embeds the whole image and its tiles in one batch, equal to scoring each alone within 1e-5", async () => {
    const crops = await preprocessCrops(await banner(), model.preprocess, DEFAULT_SAMPLING, true);
    expect(crops).toMatchObject({ frames: 1, tiles: 7 });
    expect(crops.items[0]).toEqual({ frame: 0 });
    const plane = crops.pixels.length / crops.items.length;
    const batch = await model.embedPixels(crops.pixels.slice(), crops.items.length);
    for (let i = 0; i < crops.items.length; i++) {
      const [alone] = await model.embedPixels(crops.pixels.slice(i * plane, (i + 1) * plane), 1);
      expect(maxAbsDiff(batch[i]!, alone!)).toBeLessThan(1e-5);
    }
  });

  it("catches a small red square on a 2000x400 canvas with tiles on, reports the region, and misses it with tiles off", async () => {
    const counting = new CountingEmbedder(model);
    const moderator = new ImageModerator(Object.assign(counting, { info: model.info, preprocess: model.preprocess }), () => compiled, limits);
    const { verdict, timings } = await moderator.moderate(await banner());
    const [whole, tiled] = verdict.policies;
    expect(whole).toMatchObject({ id: "red_whole", decision: "allow" });
    expect(whole?.region).toBeUndefined();
    expect(tiled).toMatchObject({ id: "red_tiles", decision: "review" });
    const [x, y, w, h] = tiled!.region!;
    expect(x).toBeLessThanOrEqual(SQUARE.left);
    expect(y).toBeLessThanOrEqual(SQUARE.top);
    expect(x + w).toBeGreaterThanOrEqual(SQUARE.left + SQUARE.size);
    expect(y + h).toBeGreaterThanOrEqual(SQUARE.top + SQUARE.size);
    expect(verdict.decision).toBe("review");
    expect(timings).toMatchObject({ frames: 1, tiles: 7 });
    expect(counting.counters).toMatchObject({ imageRuns: 1, imagesEmbedded: 8 });

    // a job that judges only the policy without tiles never cuts any
    const only = await moderator.moderate(await banner(), { policies: ["red_whole"] });
    expect(only.verdict.decision).toBe("allow");
    expect(only.timings.tiles).toBe(0);
  });

  it("caches every embedding with its region, and re-embeds an entry made without tiles once a policy wants them", async () => {
    const cache = new RedisImageEmbeddingCache(redis, { ttlSeconds: 60, prefix: `${ns}:imgemb` });
    const counting = new CountingEmbedder(model);
    const moderator = new ImageModerator(Object.assign(counting, { info: model.info, preprocess: model.preprocess }), () => compiled, limits, cache);
    const png = await banner(120);
    const untiled = await moderator.moderate(png, { policies: ["red_whole"] });
    expect(untiled.timings).toMatchObject({ embeddingCached: false, tiles: 0 });
    const tiled = await moderator.moderate(png);
    expect(tiled.timings).toMatchObject({ embeddingCached: false, tiles: 7 });
    const again = await moderator.moderate(png);
    expect(again.timings).toMatchObject({ embeddingCached: true, tiles: 7 });
    expect(again.verdict).toEqual(tiled.verdict);
    expect(counting.counters.imageRuns).toBe(2);
    const keys = await redis.keys(`${ns}:imgemb:*`);
    expect(keys).toEqual([`${ns}:imgemb:${model.info.fingerprint}:${tiled.verdict.imageSha256}:f8.t2x9`]);
    const stored = decodeEmbeddings((await redis.getBuffer(keys[0]!))!)!;
    expect(stored).toMatchObject({ width: 2000, height: 400, frames: 1, tiled: true });
    expect(stored.items.filter((i) => i.region !== undefined)).toHaveLength(7);
    expect(decodeEmbeddings(encodeEmbeddings(stored))).toEqual(stored);
    expect(decodeEmbeddings(Buffer.from("not an entry"))).toBeUndefined();
  });
});
