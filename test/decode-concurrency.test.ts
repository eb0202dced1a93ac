/**
 * CLIPGUARD_DECODE_CONCURRENCY: the moderator never decodes more images at once than allowed,
 * and images waiting for a decode slot are still judged, each exactly as when judged alone.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClipModel } from "../src/clip/clip-model.js";
import { DEFAULT_DECODE_LIMITS } from "../src/clip/image-decode.js";
import { ImageModerator } from "../src/policies/image-moderator.js";
import { compilePolicies, parsePolicies, type CompiledPolicySet } from "../src/policies/index.js";
import { colourPolicies, solidPng } from "./support/fixtures.js";

describe("decode concurrency", () => {
  let model: ClipModel;
  let compiled: CompiledPolicySet;
  let images: Buffer[];

  beforeAll(async () => {
    model = await ClipModel.load("models/demo");
    compiled = await compilePolicies(parsePolicies(colourPolicies("decode-slots"), "inline.yaml"), model);
    // large enough that a decode takes a while, distinct so that nothing could be shared
    images = await Promise.all(Array.from({ length: 8 }, (_, i) => solidPng([20 + i * 25, 40, 200 - i * 20], 1600, 1200)));
  });
  afterAll(async () => {
    await model.release();
  });

  for (const limit of [1, 3]) {
    it(`runs at most ${limit} decode(s) at a time and judges every image as alone`, async () => {
      const moderator = new ImageModerator(model, () => compiled, DEFAULT_DECODE_LIMITS, undefined, { decodeConcurrency: limit });
      let maxRunning = 0;
      let maxWaiting = 0;
      const watch = setInterval(() => {
        const load = moderator.decodeLoad;
        maxRunning = Math.max(maxRunning, load.running);
        maxWaiting = Math.max(maxWaiting, load.waiting);
      }, 1);
      const together = await Promise.all(images.map((bytes) => moderator.moderate(bytes)));
      clearInterval(watch);
      expect(maxRunning).toBeGreaterThan(0);
      expect(maxRunning).toBeLessThanOrEqual(limit);
      expect(maxWaiting).toBeGreaterThan(0); // 8 images, at most `limit` decoding: the others waited
      expect(moderator.decodeLoad).toEqual({ running: 0, waiting: 0 });
      const alone = new ImageModerator(model, () => compiled, DEFAULT_DECODE_LIMITS);
      for (const [i, bytes] of images.entries()) {
        const single = await alone.moderate(bytes);
        expect(together[i]!.verdict.policies).toEqual(single.verdict.policies);
      }
    });
  }
});
