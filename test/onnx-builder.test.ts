import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildTextModel,
  buildVisionModel,
  type ClipArchConfig,
  createClipWeights,
  multiplyAccumulates,
  VIT_B_32_CONFIG,
} from "../tools/onnx/clip-architecture.js";
import { SeededRandom } from "../tools/onnx/seeded-random.js";
import { referenceImageEmbeds, referenceTextEmbeds } from "./support/clip-reference.js";

const TINY: ClipArchConfig = {
  embedDim: 16,
  vision: { imageSize: 32, patchSize: 8, width: 32, layers: 2, heads: 4, mlpDim: 64 },
  text: { vocabSize: 64, contextLength: 16, width: 32, layers: 2, heads: 4, mlpDim: 64, eosTokenId: 63 },
};
const BOS = 62;
const EOS = TINY.text.eosTokenId;
const TOLERANCE = 1e-4;
const SEED = 1234;

function expectClose(actual: Float32Array, expected: Float32Array): void {
  expect(actual.length).toBe(expected.length);
  const worst = Math.max(...actual.map((v, i) => Math.abs(v - (expected[i] ?? Number.NaN))));
  expect(worst).toBeLessThan(TOLERANCE);
}

function norm(v: Float32Array): number {
  return Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));
}

function rows(data: Float32Array, count: number): Float32Array[] {
  const size = data.length / count;
  return Array.from({ length: count }, (_, i) => data.slice(i * size, (i + 1) * size));
}

function int64Tensor(values: number[][]): ort.Tensor {
  const width = values[0]?.length ?? 0;
  return new ort.Tensor("int64", BigInt64Array.from(values.flat().map(BigInt)), [values.length, width]);
}

async function run(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>, output: string, count: number): Promise<Float32Array[]> {
  const result = await session.run(feeds);
  const tensor = result[output];
  if (tensor === undefined) throw new Error(`no ${output} output`);
  expect(tensor.dims).toEqual([count, TINY.embedDim]);
  return rows(tensor.data as Float32Array, count);
}

describe("tiny CLIP built with the ONNX graph builder", () => {
  const weights = createClipWeights(TINY, SEED);
  let dir: string;
  let vision: ort.InferenceSession;
  let text: ort.InferenceSession;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "clipguard-onnx-builder-"));
    await writeFile(join(dir, "vision_model.onnx"), buildVisionModel(weights));
    await writeFile(join(dir, "text_model.onnx"), buildTextModel(weights));
    vision = await ort.InferenceSession.create(join(dir, "vision_model.onnx"));
    text = await ort.InferenceSession.create(join(dir, "text_model.onnx"));
  });

  afterAll(async () => {
    await Promise.all([vision?.release(), text?.release()]);
    await rm(dir, { recursive: true, force: true });
  });

  it("declares the CLIP export interface with a dynamic batch", () => {
    expect(vision.inputNames).toEqual(["pixel_values"]);
    expect(vision.outputNames).toEqual(["image_embeds"]);
    expect(text.inputNames).toEqual(["input_ids"]);
    expect(text.outputNames).toEqual(["text_embeds"]);
    const model = onnxProto.onnx.ModelProto.decode(buildTextModel(weights));
    expect(Number(model.irVersion)).toBe(8);
    expect(model.producerName).toBe("clipguard-tools");
    expect(model.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([["", 17]]);
    const dims = model.graph?.input?.[0]?.type?.tensorType?.shape?.dim?.map((d) => d.dimParam || Number(d.dimValue));
    expect(dims).toEqual(["batch", "sequence"]);
  });

  it.each([1, 3])("image embeddings match the reference for a batch of %i", async (batch) => {
    const size = TINY.vision.imageSize;
    const pixels = new SeededRandom(batch).normalArray(batch * 3 * size * size);
    const actual = await run(vision, { pixel_values: new ort.Tensor("float32", pixels, [batch, 3, size, size]) }, "image_embeds", batch);
    const expected = referenceImageEmbeds(weights, TINY, pixels, batch);
    actual.forEach((embedding, i) => expectClose(embedding, expected[i] ?? new Float32Array()));
    // Unnormalized, and large enough that a 1e-4 agreement means something.
    for (const embedding of actual) expect(norm(embedding)).toBeGreaterThan(0.5);
    if (batch === 3) expect(Math.abs((actual[0]?.[0] ?? 0) - (actual[1]?.[0] ?? 0))).toBeGreaterThan(1e-3);
  });

  it("text embeddings match the reference for one prompt and for a padded batch of 3", async () => {
    const single = [[BOS, 5, 17, 33, EOS]];
    const [one] = await run(text, { input_ids: int64Tensor(single) }, "text_embeds", 1);
    expectClose(one ?? new Float32Array(), referenceTextEmbeds(weights, TINY, single)[0] ?? new Float32Array());

    const batch = [
      [BOS, 1, 2, 3, 4, 5, 6, EOS],
      [BOS, 9, EOS, EOS, EOS, EOS, EOS, EOS],
      [BOS, 40, 41, 42, EOS, 0, 0, 0],
    ];
    const actual = await run(text, { input_ids: int64Tensor(batch) }, "text_embeds", 3);
    const expected = referenceTextEmbeds(weights, TINY, batch);
    actual.forEach((embedding, i) => expectClose(embedding, expected[i] ?? new Float32Array()));
    for (const embedding of actual) expect(norm(embedding)).toBeGreaterThan(0.5);
  });

  it("ignores whatever follows the first EOS and accepts the full context length", async () => {
    const prompt = [BOS, 7, 8, 9, EOS];
    const padded = [...prompt, ...Array.from({ length: TINY.text.contextLength - prompt.length }, (_, i) => (i % 2 === 0 ? EOS : 11 + i))];
    const [short] = await run(text, { input_ids: int64Tensor([prompt]) }, "text_embeds", 1);
    const [long] = await run(text, { input_ids: int64Tensor([padded]) }, "text_embeds", 1);
    expectClose(long ?? new Float32Array(), short ?? new Float32Array());
  });

  it("applies an attention_mask on top of the causal mask when configured", async () => {
    const config: ClipArchConfig = { ...TINY, text: { ...TINY.text, withAttentionMask: true } };
    const masked = createClipWeights(config, SEED);
    const session = await ort.InferenceSession.create(buildTextModel(masked));
    try {
      expect(session.inputNames).toEqual(["input_ids", "attention_mask"]);
      // The mask hides token 2 of the first prompt, which the EOS position would otherwise see.
      const ids = [
        [BOS, 3, 4, 5, EOS, 0],
        [BOS, 6, EOS, EOS, EOS, EOS],
      ];
      const mask = [
        [1, 1, 0, 1, 1, 0],
        [1, 1, 1, 0, 0, 0],
      ];
      const actual = await run(session, { input_ids: int64Tensor(ids), attention_mask: int64Tensor(mask) }, "text_embeds", 2);
      const expected = referenceTextEmbeds(masked, config, ids, mask);
      actual.forEach((embedding, i) => expectClose(embedding, expected[i] ?? new Float32Array()));
      const unmasked = referenceTextEmbeds(masked, config, ids);
      expect(Math.abs((actual[0]?.[0] ?? 0) - (unmasked[0]?.[0] ?? 0))).toBeGreaterThan(1e-3);
    } finally {
      await session.release();
    }
  });

  it("is deterministic: the same seed gives byte-identical models, another seed does not", () => {
    const again = createClipWeights(TINY, SEED);
    expect(Buffer.from(buildVisionModel(again)).equals(Buffer.from(buildVisionModel(weights)))).toBe(true);
    expect(Buffer.from(buildTextModel(again)).equals(Buffer.from(buildTextModel(weights)))).toBe(true);
    const other = createClipWeights(TINY, SEED + 1);
    expect(Buffer.from(buildVisionModel(other)).equals(Buffer.from(buildVisionModel(weights)))).toBe(false);
  });
});

describe("multiplyAccumulates", () => {
  it("gives ViT-B/32's well-known ≈4.4 GMACs per image and ≈3 GMACs per 77-token prompt", () => {
    const macs = multiplyAccumulates(VIT_B_32_CONFIG);
    // 49·768·3·32² (patches) + 12·(4·50·768² + 2·50²·768 + 2·50·768·3072) + 768·512
    expect(macs.vision).toBe(4_408_811_520);
    // 12·(4·77·512² + 2·77²·512 + 2·77·512·2048) + 512·512
    expect(macs.text).toBe(2_979_770_368);
    expect(macs.vision / 4.4e9).toBeCloseTo(1, 1);
    expect(macs.text / 2.95e9).toBeCloseTo(1, 1);
  });
});
