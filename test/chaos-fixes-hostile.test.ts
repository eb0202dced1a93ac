// Regression tests for what the chaos suite's hostile-input and SSRF scenarios found
// (chaos/hostile-inputs.chaos.ts, chaos/ssrf.chaos.ts): decode work of long animations,
// oversized refs and base64, IPv4-compatible IPv6 addresses.
import { Socket } from "node:net";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { manyFrameGif, oversizedPng } from "../chaos/support/hostile-images.js";
import { DEFAULT_SAMPLING } from "../src/clip/crop-plan.js";
import { DECODE_WORK_FACTOR, decodeWork, preprocessCrops } from "../src/clip/image-crops.js";
import { ClipguardError, isClipguardError } from "../src/shared/errors.js";
import { decodeBase64Strict } from "../src/shared/image-bytes.js";
import { addressRefusal } from "../src/worker/address-policy.js";
import { loadJobImage } from "../src/worker/image-source.js";
import { fetchImageUrl } from "../src/worker/url-fetcher.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";

const CLIP_224 = {
  doResize: true,
  shortestEdge: 224,
  doCenterCrop: true,
  cropWidth: 224,
  cropHeight: 224,
  rescaleFactor: 1 / 255,
  doNormalize: true,
  imageMean: [0.48145466, 0.4578275, 0.40821073] as [number, number, number],
  imageStd: [0.26862954, 0.26130258, 0.27577711] as [number, number, number],
};
const LIMITS = { maxBytes: 20 * 1024 * 1024, maxPixels: 40_000_000 };

async function errorOf(promise: Promise<unknown>): Promise<ClipguardError> {
  try {
    await promise;
  } catch (err) {
    if (isClipguardError(err)) return err;
    throw err;
  }
  throw new Error("expected a ClipguardError");
}

describe("decode work of animations (chaos: a 10,000-frame GIF took 2.2 s)", () => {
  it.each([
    { name: "still image", info: { format: "png" as const, width: 100, height: 100 }, frames: [0], tiled: [], work: 10_000 },
    { name: "GIF frame n costs n + 1 frames", info: { format: "gif" as const, width: 10, height: 10 }, frames: [0, 4, 9], tiled: [], work: (1 + 5 + 10) * 100 },
    { name: "a tiled frame is decoded again", info: { format: "webp" as const, width: 10, height: 10 }, frames: [0, 9], tiled: [9], work: (1 + 10 + 10) * 100 },
    { name: "TIFF pages are independent", info: { format: "tiff" as const, width: 10, height: 10 }, frames: [0, 3], tiled: [], work: 200 },
  ])("$name", ({ info, frames, tiled, work }) => {
    expect(decodeWork(info, frames, tiled)).toBe(work);
  });

  it("refuses a small GIF whose sampled frames take too many pixels to decode, before decoding", async () => {
    const gif = manyFrameGif(10_000, 160, 160); // 2.2 MB, 256 megapixels in all
    const started = performance.now();
    const err = await errorOf(preprocessCrops(gif, CLIP_224, DEFAULT_SAMPLING, false, LIMITS));
    expect(err.code).toBe("CLIPGUARD_E_IMAGE_PIXELS");
    expect(err.retryable).toBe(false);
    expect(err.message).toContain(`${DECODE_WORK_FACTOR} x 40000000`);
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it("judges the same GIF on its first frame when only one frame is sampled", async () => {
    const crops = await preprocessCrops(manyFrameGif(10_000, 160, 160), CLIP_224, { ...DEFAULT_SAMPLING, framesMax: 1 }, false, LIMITS);
    expect(crops.frames).toBe(1);
  });

  it("still decodes an animation within the budget", async () => {
    const crops = await preprocessCrops(manyFrameGif(100, 64, 64), CLIP_224, DEFAULT_SAMPLING, false, LIMITS);
    expect(crops.frames).toBe(8);
    expect(crops.info.pages).toBe(100);
  });
});

describe("oversized base64 is refused before it is copied", () => {
  it("refuses text far longer than the limit allows as CLIPGUARD_E_IMAGE_TOO_LARGE", () => {
    const text = "A".repeat(4 * 1024 * 1024);
    expect(() => decodeBase64Strict(text, 1024 * 1024)).toThrow(expect.objectContaining({ code: "CLIPGUARD_E_IMAGE_TOO_LARGE" }));
    // refused on its length: the message counts characters, not decoded bytes
    expect(() => decodeBase64Strict(text, 1024 * 1024)).toThrow(/4194304 characters/);
  });

  it("still decodes base64 of exactly the limit with MIME line breaks", () => {
    const bytes = oversizedPng(300_000);
    const mime = bytes.toString("base64").replace(/.{76}/g, "$&\r\n");
    expect(decodeBase64Strict(mime, bytes.length).equals(bytes)).toBe(true);
  });
});

describe("image.ref over the byte limit", () => {
  const ns = testNamespace();
  let redis: Redis;
  beforeAll(async () => {
    redis = new Redis(await testRedisUrl());
  });
  afterAll(async () => {
    await cleanupNamespace(redis, ns);
    redis.disconnect();
  });

  it("is refused from its length (STRLEN) without being read", async () => {
    const ref = `clipguard:ref:${ns.replaceAll("-", "")}`;
    await redis.set(ref, oversizedPng(2048), "EX", 60);
    const getBuffer = vi.spyOn(redis, "getBuffer");
    try {
      const err = await errorOf(loadJobImage({ ref }, redis, { maxBytes: 1024, url: { timeoutMs: 1000, maxRedirects: 0 } }));
      expect(err.code).toBe("CLIPGUARD_E_IMAGE_TOO_LARGE");
      expect(getBuffer).not.toHaveBeenCalled();
    } finally {
      getBuffer.mockRestore();
      await redis.del(ref);
    }
  });
});

describe("IPv4-compatible IPv6 addresses (chaos: [::127.0.0.1] was dialled)", () => {
  const policy = { allowPrivateAddresses: false, allowedHosts: [] };

  // (WHATWG URL writes [::127.0.0.1] as [::7f00:1]; ipaddr.js would read the dotted form as IPv4-mapped)
  it.each(["::7f00:1", "::a00:1", "::a9fe:a9fe", "::2"])("refuses %s", (address) => {
    expect(addressRefusal(address, policy)).toBe("a deprecated IPv4-compatible IPv6 address");
    expect(addressRefusal(address, { ...policy, allowPrivateAddresses: true })).toBeDefined();
  });

  it("still lets public IPv6 through, and names ::1 and :: for what they are", () => {
    expect(addressRefusal("2606:4700::1111", policy)).toBeUndefined();
    expect(addressRefusal("::1", policy)).toBe("a loopback address");
    expect(addressRefusal("::", policy)).toBe("an unspecified address");
  });

  it("refuses the URL form without opening a socket", async () => {
    const connect = vi.spyOn(Socket.prototype, "connect");
    try {
      const err = await errorOf(fetchImageUrl("http://[::127.0.0.1]:9/x.png", { maxBytes: 1024, timeoutMs: 1000, maxRedirects: 0 }));
      expect(err.code).toBe("CLIPGUARD_E_URL_REFUSED");
      expect(connect).not.toHaveBeenCalled();
    } finally {
      connect.mockRestore();
    }
  });
});
