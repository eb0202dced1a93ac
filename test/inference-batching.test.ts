import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InferencePool } from "../src/clip/inference-pool.js";
import { tempDir } from "./support/fixtures.js";
import { TINY_IMAGE_SIZE, writeTinyClipModel } from "./support/tiny-clip-model.js";

/** Deterministic pseudo-random CHW images for the tiny model. */
function images(count: number): Float32Array[] {
  let seed = 12345;
  const next = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 4 - 2;
  return Array.from({ length: count }, () => Float32Array.from({ length: 3 * TINY_IMAGE_SIZE * TINY_IMAGE_SIZE }, next));
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs((a[i] ?? 0) - (b[i] ?? 0)));
  return worst;
}

describe("inference pool micro-batching", () => {
  let dir: string;
  let batched: InferencePool;
  let single: InferencePool;
  const batchSizes: number[] = [];

  beforeAll(async () => {
    dir = await tempDir();
    await writeTinyClipModel(dir);
    [batched, single] = await Promise.all([
      InferencePool.start({ modelDir: dir, maxBatch: 4, maxBatchWaitMs: 20, onImageBatch: (n) => batchSizes.push(n) }),
      InferencePool.start({ modelDir: dir, maxBatch: 1, maxBatchWaitMs: 0 }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([batched.close(), single.close()]);
  });

  it("runs concurrent single-image requests together, with results equal to single runs within 1e-5", async () => {
    const inputs = images(10);
    const alone: Float32Array[] = [];
    for (const img of inputs) alone.push((await single.embedPixels(img.slice(), 1))[0]!);
    const together = await Promise.all(inputs.map(async (img) => (await batched.embedPixels(img.slice(), 1))[0]!));
    expect(batchSizes.some((n) => n > 1)).toBe(true);
    expect(Math.max(...batchSizes)).toBeLessThanOrEqual(4);
    expect(batchSizes.reduce((a, b) => a + b, 0)).toBe(10);
    together.forEach((emb, i) => expect(maxAbsDiff(emb, alone[i]!)).toBeLessThan(1e-5));
    expect(batched.counters.imagesEmbedded).toBe(10);
    expect(batched.counters.imageRuns).toBe(batchSizes.length);
  });
});
