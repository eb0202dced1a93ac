/**
 * The bundled demo model, end to end through the real engine: PNG/JPEG bytes → preprocessImage →
 * ClipModel.embedPixels, prompts → ClipModel.embedTexts, policies YAML → parsePolicies →
 * compilePolicies → ImageModerator verdicts. Zero-shot: nothing is fitted to these images.
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClipModel } from "../src/clip/clip-model.js";
import { DEFAULT_DECODE_LIMITS } from "../src/clip/image-decode.js";
import { preprocessImage } from "../src/clip/preprocess.js";
import { ImageModerator } from "../src/policies/image-moderator.js";
import { compilePolicies, parsePolicies, type CompiledPolicySet } from "../src/policies/index.js";

const COLOURS = ["red", "green", "blue", "yellow"] as const;
type Colour = (typeof COLOURS)[number];
type Rgb = readonly [number, number, number];

const COLOUR_RGB: Record<Colour, Rgb> = {
  red: [220, 20, 30],
  green: [30, 200, 40],
  blue: [20, 40, 220],
  yellow: [230, 210, 20],
};
const GRAY: Rgb = [128, 128, 128];
const EXAMPLES = path.resolve("examples/images");

interface TestImage {
  name: string;
  /** The colour the image is mostly made of; undefined for gray and unlabelled photos. */
  colour: Colour | undefined;
  bytes: Buffer;
}

interface EmbeddedImage extends TestImage {
  embedding: Float32Array;
}

/** A 300×200 image whose left 70% is `rgb` and the rest gray, as PNG or JPEG. */
async function mostlyColoured(rgb: Rgb, format: "png" | "jpeg"): Promise<Buffer> {
  const colour = { r: rgb[0], g: rgb[1], b: rgb[2] };
  const image = sharp({ create: { width: 300, height: 200, channels: 3, background: { r: GRAY[0], g: GRAY[1], b: GRAY[2] } } }).composite([
    { input: { create: { width: 210, height: 200, channels: 3, background: colour } }, left: 0, top: 0 },
  ]);
  return format === "png" ? image.png().toBuffer() : image.jpeg({ quality: 90 }).toBuffer();
}

/**
 * Photos shipped in examples/images, if any. A name starting with a colour word
 * (`red-poster.png`) says what the image is mostly made of; other photos are distractors.
 */
async function examplePhotos(): Promise<TestImage[]> {
  const names = await readdir(EXAMPLES).catch(() => [] as string[]);
  const photos = names.filter((name) => /\.(png|jpe?g|webp)$/i.test(name)).sort();
  return Promise.all(
    photos.map(async (name) => ({
      name: `examples/images/${name}`,
      colour: COLOURS.find((c) => name.toLowerCase().startsWith(`${c}-`)),
      bytes: await readFile(path.join(EXAMPLES, name)),
    })),
  );
}

function dot(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  a.forEach((x, i) => {
    sum += x * (b[i] ?? Number.NaN);
  });
  return sum;
}

describe("the demo model ranks images by colour, zero-shot, through the real engine", () => {
  let model: ClipModel;
  let images: EmbeddedImage[];

  async function promptEmbedding(prompt: string): Promise<Float32Array> {
    const [embedding] = await model.embedTexts([prompt]);
    if (embedding === undefined) throw new Error(`no embedding for ${prompt}`);
    return embedding;
  }

  /** Images by cosine to `prompt`, best first. */
  async function ranking(prompt: string): Promise<{ name: string; colour: Colour | undefined; score: number }[]> {
    const text = await promptEmbedding(prompt);
    return images.map((image) => ({ name: image.name, colour: image.colour, score: dot(image.embedding, text) })).sort((a, b) => b.score - a.score);
  }

  beforeAll(async () => {
    model = await ClipModel.load("models/demo");
    const generated: TestImage[] = [];
    for (const colour of COLOURS) {
      generated.push({ name: `mostly ${colour} (png)`, colour, bytes: await mostlyColoured(COLOUR_RGB[colour], "png") });
      generated.push({ name: `mostly ${colour} (jpeg)`, colour, bytes: await mostlyColoured(COLOUR_RGB[colour], "jpeg") });
    }
    generated.push({ name: "gray", colour: undefined, bytes: await mostlyColoured(GRAY, "png") });
    const all = [...generated, ...(await examplePhotos())];
    images = await Promise.all(
      all.map(async (image) => {
        const { pixels } = await preprocessImage(image.bytes, model.preprocess);
        const [embedding] = await model.embedPixels(pixels, 1);
        if (embedding === undefined) throw new Error(`no embedding for ${image.name}`);
        return { ...image, embedding };
      }),
    );
  });

  afterAll(async () => {
    await model?.release();
  });

  it('"a mostly red image" ranks every red image above every green, blue, yellow, gray or other one', async () => {
    const ranked = await ranking("a mostly red image");
    const reds = ranked.filter((r) => r.colour === "red");
    const others = ranked.filter((r) => r.colour !== "red");
    expect(reds.length).toBeGreaterThanOrEqual(2);
    expect(others.length).toBeGreaterThanOrEqual(7);
    expect(ranked.slice(0, reds.length).map((r) => r.colour)).toEqual(reds.map(() => "red"));
    // the ranking is clear, not a near tie
    const worstRed = Math.min(...reds.map((r) => r.score));
    const bestOther = Math.max(...others.map((r) => r.score));
    expect(worstRed - bestOther).toBeGreaterThan(0.1);
  });

  it.each(COLOURS)('"a %s image" ranks its own colour first', async (colour) => {
    const ranked = await ranking(`a ${colour} image`);
    const own = ranked.filter((r) => r.colour === colour).length;
    expect(ranked[0]?.colour).toBe(colour);
    expect(ranked.slice(0, own).every((r) => r.colour === colour)).toBe(true);
  });

  it("each mostly-coloured image is closest to its own colour's prompt", async () => {
    const prompts = await Promise.all(COLOURS.map((c) => promptEmbedding(`a ${c} image`)));
    for (const image of images.filter((i) => i.colour !== undefined)) {
      const scores = prompts.map((p) => dot(image.embedding, p));
      expect(COLOURS[scores.indexOf(Math.max(...scores))], image.name).toBe(image.colour);
    }
  });

  describe("through policies and ImageModerator", () => {
    const POLICIES = [
      "version: 1",
      "policies:",
      "  - id: red_vs_cool",
      "    description: red against its blue and green look-alikes",
      "    prompts: [a red image]",
      "    negatives: [a blue image, a green image]",
      "    scoring: contrastive",
      "    thresholds: { review: 0.5, block: 0.9 }",
      "  - id: mostly_red",
      "    prompts: [a mostly red image, a crimson picture]",
      "    thresholds: { review: 0.6, block: 0.8 }",
      "",
    ].join("\n");
    let compiled: CompiledPolicySet;
    let moderator: ImageModerator;

    beforeAll(async () => {
      compiled = await compilePolicies(parsePolicies(POLICIES, "ranking-policies.yaml"), model);
      moderator = new ImageModerator(model, () => compiled, DEFAULT_DECODE_LIMITS);
    });

    async function verdictFor(colour: Colour | "gray") {
      const bytes = await mostlyColoured(colour === "gray" ? GRAY : COLOUR_RGB[colour], "png");
      const { verdict } = await moderator.moderate(bytes, { image: `${colour}.png` });
      const score = (id: string) => verdict.policies.find((p) => p.id === id)?.score ?? Number.NaN;
      return { verdict, contrastive: score("red_vs_cool"), similarity: score("mostly_red") };
    }

    it("gives a red image a contrastive probability above 0.9 and blocks it", async () => {
      const { verdict, contrastive } = await verdictFor("red");
      expect(contrastive).toBeGreaterThan(0.9);
      expect(verdict.decision).toBe("block");
      expect(verdict.model).toEqual({ name: "clipguard/demo-colour-clip", fingerprint: model.info.fingerprint });
    });

    it.each(["blue", "green"] as const)("gives a %s image a contrastive probability below 0.1", async (colour) => {
      const { verdict, contrastive, similarity } = await verdictFor(colour);
      expect(contrastive).toBeLessThan(0.1);
      expect(similarity).toBeLessThan(0.6);
      expect(verdict.decision).toBe("allow");
    });

    it("scores red above gray above blue on the similarity policy", async () => {
      const [red, gray, blue] = await Promise.all([verdictFor("red"), verdictFor("gray"), verdictFor("blue")]);
      expect(red.similarity).toBeGreaterThan(0.8);
      expect(red.similarity).toBeGreaterThan(gray.similarity);
      expect(gray.similarity).toBeGreaterThan(blue.similarity);
      expect(red.verdict.policies.find((p) => p.id === "mostly_red")?.decision).toBe("block");
    });
  });
});
