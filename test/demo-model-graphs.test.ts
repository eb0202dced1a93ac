import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeDemoModel } from "../tools/demo-model/demo-model-files.js";

const COMMITTED = fileURLToPath(new URL("../models/demo/", import.meta.url));
const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];
const SIZE = 224;

const SOLID_COLOURS: Record<string, readonly [number, number, number]> = {
  red: [255, 0, 0],
  green: [0, 255, 0],
  blue: [0, 0, 255],
  yellow: [255, 255, 0],
  black: [0, 0, 0],
  white: [255, 255, 255],
  gray: [128, 128, 128],
};
const COLOUR_NAMES = Object.keys(SOLID_COLOURS);

const PROMPT_TARGETS: readonly (readonly [string, string])[] = [
  ["a mostly red image", "red"],
  ["a green image", "green"],
  ["a blue photo", "blue"],
  ["a yellow picture", "yellow"],
  ["a dark image", "black"],
  ["a bright image", "white"],
];

async function listFiles(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => relative(directory, join(entry.parentPath, entry.name)).split("\\").join("/"))
    .sort();
}

/** CLIP-normalized CHW pixels of solid 224×224 images, one after another. */
function solidPixels(names: readonly string[]): Float32Array {
  const plane = SIZE * SIZE;
  const pixels = new Float32Array(names.length * 3 * plane);
  names.forEach((name, b) => {
    const rgb = SOLID_COLOURS[name] ?? [0, 0, 0];
    for (let ch = 0; ch < 3; ch++) {
      const value = ((rgb[ch] ?? 0) / 255 - (CLIP_MEAN[ch] ?? 0)) / (CLIP_STD[ch] ?? 1);
      pixels.fill(value, (b * 3 + ch) * plane, (b * 3 + ch + 1) * plane);
    }
  });
  return pixels;
}

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  a.forEach((x, i) => {
    const y = b[i] ?? 0;
    dot += x * y;
    na += x * x;
    nb += y * y;
  });
  return dot / Math.sqrt(na * nb);
}

function rows(data: Float32Array, count: number): Float32Array[] {
  const size = data.length / count;
  return Array.from({ length: count }, (_, i) => data.slice(i * size, (i + 1) * size));
}

describe("generated demo model", () => {
  let generated: string;

  beforeAll(async () => {
    generated = await mkdtemp(join(tmpdir(), "clipguard-demo-model-"));
    await writeDemoModel(generated);
  });

  afterAll(async () => {
    await rm(generated, { recursive: true, force: true });
  });

  it("matches the committed models/demo/ byte for byte, file for file", async () => {
    const files = await listFiles(generated);
    expect(await listFiles(COMMITTED)).toEqual(files);
    expect(files).toEqual(
      expect.arrayContaining(["config.json", "preprocessor_config.json", "tokenizer.json", "onnx/vision_model.onnx", "onnx/text_model.onnx"]),
    );
    let total = 0;
    for (const file of files) {
      const fresh = await readFile(join(generated, file));
      const committed = await readFile(join(COMMITTED, file));
      expect(fresh.equals(committed), `${file} differs; run npm run generate:demo-model`).toBe(true);
      total += fresh.length;
    }
    expect(total).toBeLessThan(2 * 1024 * 1024);
  });

  it("says it is the demo model and agrees with its own config", async () => {
    const config = JSON.parse(await readFile(join(COMMITTED, "config.json"), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({ model_type: "clip", clipguard_demo: true, _name_or_path: "clipguard/demo-colour-clip" });
    expect(config).toMatchObject({ text_config: { max_position_embeddings: 77 }, vision_config: { image_size: 224 } });
  });
});

describe("demo model towers in onnxruntime", () => {
  let tokenizer: Tokenizer;
  let eos: number;
  let dim: number;
  let vision: ort.InferenceSession;
  let text: ort.InferenceSession;

  beforeAll(async () => {
    const read = async (file: string): Promise<object> => JSON.parse(await readFile(join(COMMITTED, file), "utf8")) as object;
    tokenizer = new Tokenizer(await read("tokenizer.json"), await read("tokenizer_config.json"));
    eos = tokenizer.token_to_id("<|endoftext|>") ?? -1;
    dim = ((await read("config.json")) as { projection_dim: number }).projection_dim;
    vision = await ort.InferenceSession.create(join(COMMITTED, "onnx", "vision_model.onnx"));
    text = await ort.InferenceSession.create(join(COMMITTED, "onnx", "text_model.onnx"));
  });

  afterAll(async () => {
    await Promise.all([vision?.release(), text?.release()]);
  });

  async function embedTexts(ids: number[][]): Promise<Float32Array[]> {
    const length = Math.max(...ids.map((row) => row.length));
    const padded = ids.flatMap((row) => [...row, ...new Array<number>(length - row.length).fill(eos)]);
    const result = await text.run({ input_ids: new ort.Tensor("int64", BigInt64Array.from(padded.map(BigInt)), [ids.length, length]) });
    const embeds = result.text_embeds;
    expect(embeds?.dims).toEqual([ids.length, dim]);
    return rows(embeds?.data as Float32Array, ids.length);
  }

  it("tokenizes like CLIP: lowercase whole words between <|startoftext|> and <|endoftext|>", () => {
    const encoding = tokenizer.encode("A Mostly RED image, of a zebra!");
    expect(encoding.tokens).toEqual(["<|startoftext|>", "a", "mostly", "red", "image", "[UNK]", "of", "a", "[UNK]", "[UNK]", "<|endoftext|>"]);
    expect(encoding.ids.at(-1)).toBe(eos);
  });

  it("ranks each colour prompt's own solid colour image highest", async () => {
    const imageResult = await vision.run({ pixel_values: new ort.Tensor("float32", solidPixels(COLOUR_NAMES), [COLOUR_NAMES.length, 3, SIZE, SIZE]) });
    expect(imageResult.image_embeds?.dims).toEqual([COLOUR_NAMES.length, dim]);
    const images = rows(imageResult.image_embeds?.data as Float32Array, COLOUR_NAMES.length);
    const prompts = await embedTexts(PROMPT_TARGETS.map(([prompt]) => tokenizer.encode(prompt).ids));
    PROMPT_TARGETS.forEach(([prompt, target], p) => {
      const scores = images.map((image) => cosine(prompts[p] ?? new Float32Array(), image));
      const best = COLOUR_NAMES[scores.indexOf(Math.max(...scores))];
      expect(best, `${prompt}: ${scores.map((s) => s.toFixed(3)).join(" ")}`).toBe(target);
      const runnerUp = Math.max(...scores.filter((_, i) => COLOUR_NAMES[i] !== target));
      expect(Math.max(...scores) - runnerUp).toBeGreaterThan(0.2);
    });
  });

  it("ignores everything after the first <|endoftext|>", async () => {
    const ids = tokenizer.encode("a dark image").ids;
    const [plain, paddedWithEos, paddedWithWords] = await embedTexts([
      [...ids, ...new Array<number>(8).fill(eos)],
      [...ids, eos, eos, eos],
      [...ids, ...tokenizer.encode("bright red", { add_special_tokens: false }).ids, eos],
    ]);
    const [alone] = await embedTexts([ids]);
    for (const embedding of [plain, paddedWithEos, paddedWithWords]) {
      const worst = Math.max(...Array.from(embedding ?? [], (x, i) => Math.abs(x - (alone?.[i] ?? Number.NaN))));
      expect(worst).toBeLessThan(1e-6);
    }
  });
});
