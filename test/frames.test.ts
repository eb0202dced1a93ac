import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { Queue, QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClipModel } from "../src/clip/clip-model.js";
import { CountingEmbedder } from "../src/clip/counting-embedder.js";
import { DEFAULT_SAMPLING, planCrops, sampleFrameIndices } from "../src/clip/crop-plan.js";
import { preprocessCrops } from "../src/clip/image-crops.js";
import { preprocessImage } from "../src/clip/preprocess.js";
import type { TextEmbedder } from "../src/clip/types.js";
import { compilePolicies, parsePolicies } from "../src/policies/index.js";
import { judgeEmbeddings } from "../src/policies/image-judgement.js";
import { ImageModerator } from "../src/policies/image-moderator.js";
import type { JobVerdict } from "../src/shared/job-schema.js";
import { colourPolicies, tempDir } from "./support/fixtures.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { startWorker, type WorkerProcess } from "./support/worker-process.js";

const DEMO = path.resolve("models/demo");
type RGB = [number, number, number];

/**
 * A 10-frame animation whose only red frame is the 6th (index 5); the other frames are greys that
 * differ enough for the encoder to keep them apart. `shade` makes the bytes unique to one test, so
 * the shared image-embedding cache never answers for another test's image.
 */
async function animation(format: "gif" | "webp", shade = 0, redAt = 5, count = 10): Promise<Buffer> {
  const frames = await Promise.all(
    Array.from({ length: count }, (_, i) => {
      const v = 30 + 20 * i + (shade % 10);
      const colour: RGB = i === redAt ? [220, 20, 30] : [v, v, v];
      return sharp({ create: { width: 40, height: 30, channels: 3, background: { r: colour[0], g: colour[1], b: colour[2] } } })
        .png()
        .toBuffer();
    }),
  );
  return sharp(frames, { join: { animated: true } })[format]({ delay: Array<number>(count).fill(100) }).toBuffer();
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs((a[i] ?? 0) - (b[i] ?? 0)));
  return worst;
}

describe("frame sampling", () => {
  it.each([
    [10, 8, [0, 1, 3, 4, 5, 6, 8, 9]],
    [10, 1, [0]],
    [10, 2, [0, 9]],
    [3, 8, [0, 1, 2]],
    [1, 8, [0]],
    [24, 8, [0, 3, 7, 10, 13, 16, 20, 23]],
  ])("%i frames, at most %i → %j (evenly spaced, first and last)", (pages, max, expected) => {
    expect(sampleFrameIndices(pages, max)).toEqual(expected);
  });

  it("samples frames of GIF, WebP and AVIF, and only the first page of a TIFF", () => {
    const size = { width: 40, height: 30, pages: 10 };
    for (const format of ["gif", "webp", "avif"]) expect(planCrops({ ...size, format }, { cropWidth: 224, cropHeight: 224 }, DEFAULT_SAMPLING, false).frames).toHaveLength(8);
    expect(planCrops({ ...size, format: "tiff" }, { cropWidth: 224, cropHeight: 224 }, DEFAULT_SAMPLING, false).frames).toEqual([0]);
  });
});

describe("combining frames", () => {
  // one dimension per concept: the prompt "red" is e0, anything else e1
  const embedder: TextEmbedder = {
    fingerprint: "test",
    embedTexts: async (texts) => texts.map((t) => Float32Array.from(t.startsWith("red") ? [1, 0] : [0, 1])),
  };
  const frameWith = (cos: number) => Float32Array.from([cos, Math.sqrt(1 - cos * cos)]);
  const yaml = "version: 1\npolicies:\n  - id: red\n    prompts: [red]\n    thresholds: { review: 0.5, block: 0.8 }\n";

  it.each([
    ["max", 2, [0.1, 0.9, 0.6, 0.2], 0.9, 1, "block"],
    ["any-k", 2, [0.1, 0.9, 0.6, 0.2], 0.6, 2, "review"],
    ["any-k", 3, [0.1, 0.9, 0.6, 0.2], 0.2, 3, "allow"],
    ["any-k", 2, [0.85], 0.85, 0, "block"],
    ["any-k", 5, [0.3, 0.9], 0.3, 0, "allow"],
  ] as const)("%s (k=%i) over %j: score %d from frame %i → %s", async (mode, k, scores, score, frame, decision) => {
    const compiled = await compilePolicies(parsePolicies(yaml, "p.yaml"), embedder);
    const items = scores.map((_, i) => ({ frame: i }));
    const judgement = judgeEmbeddings(compiled, { items, embeddings: scores.map(frameWith) }, undefined, { mode, k });
    expect(judgement.frames).toBe(scores.length);
    expect(judgement.policies[0]?.score).toBeCloseTo(score, 6);
    expect(judgement.policies[0]).toMatchObject({ frame, decision });
    expect(judgement.decision).toBe(decision);
  });
});

describe("animations in the engine (demo model)", () => {
  let model: ClipModel;

  beforeAll(async () => {
    model = await ClipModel.load(DEMO);
  });

  afterAll(async () => {
    await model.release();
  });

  it("embeds the sampled frames in one image-tower batch, equal to scoring each frame alone within 1e-5", async () => {
    const gif = await animation("gif");
    const crops = await preprocessCrops(gif, model.preprocess, DEFAULT_SAMPLING, false);
    expect(crops.items.map((i) => i.frame)).toEqual([0, 1, 3, 4, 5, 6, 8, 9]);
    const plane = crops.pixels.length / crops.items.length;
    const batch = await model.embedPixels(crops.pixels.slice(), crops.items.length);
    for (let i = 0; i < crops.items.length; i++) {
      const [alone] = await model.embedPixels(crops.pixels.slice(i * plane, (i + 1) * plane), 1);
      expect(maxAbsDiff(batch[i]!, alone!)).toBeLessThan(1e-5);
    }
    // frame 0 of the batch is exactly what single-image preprocessing gives
    expect(crops.pixels.subarray(0, plane)).toEqual((await preprocessImage(gif, model.preprocess)).pixels);
  });

  it.each(["gif", "webp"] as const)("catches the red 6th frame of a %s with frames on, and misses it with frames.max 1", async (format) => {
    const compiled = await compilePolicies(parsePolicies(colourPolicies("frames"), "p.yaml"), model);
    const counting = new CountingEmbedder(model);
    const limits = { maxBytes: 1e7, maxPixels: 4e7 };
    const moderator = new ImageModerator(Object.assign(counting, { info: model.info, preprocess: model.preprocess }), () => compiled, limits);
    const bytes = await animation(format);
    const on = await moderator.moderate(bytes);
    expect(on.verdict).toMatchObject({ decision: "block", frames: 8 });
    expect(on.verdict.policies[0]).toMatchObject({ id: "red", decision: "block", frame: 5 });
    expect(on.timings).toMatchObject({ frames: 8, tiles: 0 });
    expect(counting.counters).toMatchObject({ imageRuns: 1, imagesEmbedded: 8 });

    const firstOnly = new ImageModerator(model, () => compiled, limits, undefined, { sampling: { ...DEFAULT_SAMPLING, framesMax: 1 } });
    const off = await firstOnly.moderate(bytes);
    expect(off.verdict.decision).toBe("allow");
    expect(off.verdict.frames).toBeUndefined();
    expect(off.verdict.policies[0]?.frame).toBeUndefined();
  });
});

describe("animations in the worker", () => {
  const ns = testNamespace();
  let redis: Redis;
  let defaults: WorkerProcess;
  let firstFrame: WorkerProcess;
  const queues: Queue[] = [];
  const events: QueueEvents[] = [];

  beforeAll(async () => {
    const url = await testRedisUrl();
    redis = new Redis(url);
    const dir = await tempDir();
    const policies = path.join(dir, "policies.yaml");
    await fs.writeFile(policies, colourPolicies(ns));
    const env = { REDIS_URL: url, CLIPGUARD_POLICIES: policies };
    // one verdict stream per queue: BullMQ numbers jobs per queue, and a stream publishes job id "1" once
    [defaults, firstFrame] = await Promise.all([
      startWorker({ ...env, CLIPGUARD_QUEUE: `${ns}-a`, CLIPGUARD_VERDICT_STREAM: `${ns}-a:verdicts` }),
      startWorker({ ...env, CLIPGUARD_QUEUE: `${ns}-b`, CLIPGUARD_VERDICT_STREAM: `${ns}-b:verdicts`, CLIPGUARD_FRAMES_MAX: "1" }),
    ]);
    for (const name of [`${ns}-a`, `${ns}-b`]) {
      queues.push(new Queue(name, { connection: new Redis(url, { maxRetriesPerRequest: null }) }));
      const e = new QueueEvents(name, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
      await e.waitUntilReady();
      events.push(e);
    }
  });

  afterAll(async () => {
    expect(await defaults.stop()).toBe(0);
    expect(await firstFrame.stop()).toBe(0);
    for (const q of queues) await q.obliterate({ force: true });
    await Promise.all([...queues.map((q) => q.close()), ...events.map((e) => e.close())]);
    await cleanupNamespace(redis, ns);
    redis.disconnect();
  });

  async function judge(index: 0 | 1, bytes: Buffer): Promise<JobVerdict> {
    const job = await queues[index]!.add("moderate", { image: { base64: bytes.toString("base64") } });
    return (await job.waitUntilFinished(events[index]!, 30_000)) as JobVerdict;
  }

  it("reports the deciding frame with CLIPGUARD_FRAMES_MAX at its default, and misses the frame with CLIPGUARD_FRAMES_MAX=1", async () => {
    const gif = await animation("gif", Number.parseInt(ns.slice(-2), 16));
    // the shared image-embedding cache outlives test runs: forget this animation's embeddings
    const sha = createHash("sha256").update(gif).digest("hex");
    const stale = await redis.keys(`clipguard:imgemb:*:${sha}*`);
    if (stale.length > 0) await redis.del(...stale);
    const caught = await judge(0, gif);
    expect(caught.decision).toBe("block");
    expect(caught.frames).toBe(8);
    expect(caught.policies.find((p) => p.id === "red")).toMatchObject({ decision: "block", frame: 5 });
    expect(await defaults.metric("clipguard_frames_per_image_sum")).toBe(8);
    expect(await defaults.metric("clipguard_inference_batch_size_sum")).toBe(8);
    expect(await defaults.metric("clipguard_inference_batch_size_count")).toBe(1);

    const missed = await judge(1, gif);
    expect(missed.decision).toBe("allow");
    expect(missed.frames).toBeUndefined();
    expect(missed.policies.find((p) => p.id === "red")?.frame).toBeUndefined();
    expect(await firstFrame.metric("clipguard_frames_per_image_sum")).toBe(1);
  });
});
