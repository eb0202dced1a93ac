import * as ort from "onnxruntime-node";
import { beforeAll, describe, expect, it } from "vitest";
import { parsePreprocessorConfig, preprocessImage } from "../src/clip/preprocess.js";
import { buildVisionModel, createClipWeights, type ClipArchConfig } from "../tools/onnx/clip-architecture.js";
import { photoLikeJpeg } from "./support/photo-like.js";

/** A small CLIP with ViT-B/32's input geometry (224 px, 32 px patches), cheap enough for a test. */
const CONFIG: ClipArchConfig = {
  embedDim: 32,
  vision: { imageSize: 224, patchSize: 32, width: 64, layers: 2, heads: 4, mlpDim: 128 },
  text: { vocabSize: 64, contextLength: 16, width: 32, layers: 1, heads: 4, mlpDim: 64, eosTokenId: 63 },
};
const PREPROCESS = parsePreprocessorConfig({});

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += (a[i] ?? 0) * (b[i] ?? 0);
    na += (a[i] ?? 0) ** 2;
    nb += (b[i] ?? 0) ** 2;
  }
  return dot / Math.sqrt(na * nb);
}

describe("JPEG shrink-on-load fast path", () => {
  let session: ort.InferenceSession;
  const embed = async (pixels: Float32Array) => {
    const out = await session.run({ pixel_values: new ort.Tensor("float32", pixels, [1, 3, 224, 224]) });
    return out["image_embeds"]!.data as Float32Array;
  };

  beforeAll(async () => {
    session = await ort.InferenceSession.create(buildVisionModel(createClipWeights(CONFIG, 7)));
  });

  it.each([
    ["12 MP", 4000, 3000],
    ["3 MP portrait", 1500, 2000],
    ["1 MP", 1152, 864],
  ])("keeps the embedding of a %s photo within 1e-3 cosine of the exact path", async (_name, width, height) => {
    const jpeg = await photoLikeJpeg(width, height, width + height);
    const exact = await preprocessImage(jpeg, PREPROCESS);
    const fast = await preprocessImage(jpeg, PREPROCESS, undefined, { fastShrinkOnLoad: true });
    expect(fast.pixels).not.toEqual(exact.pixels); // the fast path really was taken
    expect(cosine(await embed(fast.pixels), await embed(exact.pixels))).toBeGreaterThan(1 - 1e-3);
  });

  it("leaves small JPEGs, PNGs and images under twice the target size on the exact path", async () => {
    const small = await photoLikeJpeg(400, 300, 3);
    const a = await preprocessImage(small, PREPROCESS);
    const b = await preprocessImage(small, PREPROCESS, undefined, { fastShrinkOnLoad: true });
    expect(b.pixels).toEqual(a.pixels);
  });
});
