/**
 * A labelled set for `clipguard eval` with the demo model, generated at test time: noisy reddish
 * images under red/, bluish ones under blue/, assorted benign ones (gray, green, yellow, dark)
 * under benign/, and one truncated PNG. The demo model separates these colours cleanly, so the
 * right answers are known: AUC 1 for red and blue, thresholds between the classes.
 */
import fs from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";

type Rgb = [number, number, number];

/** Deterministic pseudo-random numbers (mulberry32), so every run makes the same images. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A PNG of `base` with uniform noise of ±`noise` per channel and pixel. */
export async function noisyPng(base: Rgb, seed: number, noise = 25, width = 48, height = 40): Promise<Buffer> {
  const next = random(seed);
  const pixels = Buffer.alloc(width * height * 3);
  for (let i = 0; i < pixels.length; i++) {
    const v = (base[i % 3] ?? 0) + (next() * 2 - 1) * noise;
    pixels[i] = Math.max(0, Math.min(255, Math.round(v)));
  }
  return sharp(pixels, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

/** Varies a base colour by up to ±`spread` per channel. */
function jitter(base: Rgb, next: () => number, spread = 20): Rgb {
  return base.map((c) => Math.max(0, Math.min(255, c + (next() * 2 - 1) * spread))) as Rgb;
}

export interface LabelledImageSpec {
  /** Relative to the set's root, with `/`. */
  file: string;
  /** Policy ids; empty for benign. */
  ids: string[];
}

export interface GeneratedSet {
  /** The folder layout (red/, blue/, benign/). */
  root: string;
  images: LabelledImageSpec[];
  /** The corrupt file, relative to the root. */
  corrupt: string;
  /** CSV and JSONL label files listing the same images (corrupt one included), in `root`. */
  csv: string;
  jsonl: string;
  /** A policies file with comments for red, blue and an unlabelled yellow policy. */
  policies: string;
  /** The same policies with a different red prompt list (one swapped for two "dark" prompts: the red AUC drops). */
  otherPolicies: string;
}

export const EVAL_POLICIES = `# Colour policies for the eval tests (demo model).
version: 1
policies:
  # reddish images stand in for a real category
  - id: red
    description: Mostly red <images> & "friends"
    prompts: [a mostly red image, a crimson picture]
    thresholds: { review: 0.5, block: 0.8 } # hand-picked, to be calibrated

  - id: blue
    prompts:
      - a blue photo
    thresholds:
      review: 0.5 # review only: never blocks

  - id: yellow
    prompts: [a yellow picture]
    thresholds: { review: 0.6, block: 0.9 }
`;

export const EVAL_OTHER_POLICIES = EVAL_POLICIES.replace("[a mostly red image, a crimson picture]", "[a mostly red image, a dark picture, a black image]");

/** Writes the set under `dir` and returns where everything is. */
export async function makeLabelledSet(dir: string): Promise<GeneratedSet> {
  const root = path.join(dir, "labels");
  const next = random(42);
  const groups: { folder: string; ids: string[]; name: string; base: Rgb; count: number }[] = [
    { folder: "red", ids: ["red"], name: "red", base: [215, 35, 35], count: 10 },
    { folder: "blue", ids: ["blue"], name: "blue", base: [35, 45, 210], count: 10 },
    { folder: "benign", ids: [], name: "gray", base: [128, 128, 128], count: 5 },
    { folder: "benign", ids: [], name: "green", base: [40, 190, 50], count: 5 },
    { folder: "benign", ids: [], name: "yellow", base: [220, 210, 40], count: 5 },
    { folder: "benign", ids: [], name: "dark", base: [22, 22, 26], count: 5 },
  ];
  const images: LabelledImageSpec[] = [];
  let seed = 1;
  for (const g of groups) {
    await fs.mkdir(path.join(root, g.folder), { recursive: true });
    for (let i = 0; i < g.count; i++) {
      const file = `${g.folder}/${g.name}-${String(i).padStart(2, "0")}.png`;
      const spread = g.name === "dark" ? 8 : g.name === "gray" ? 40 : 20;
      await fs.writeFile(path.join(root, file), await noisyPng(jitter(g.base, next, spread), seed++, g.name === "dark" ? 8 : 25));
      images.push({ file, ids: g.ids });
    }
  }
  const corrupt = "benign/corrupt.png";
  const whole = await noisyPng([128, 128, 128], 999);
  await fs.writeFile(path.join(root, corrupt), whole.subarray(0, Math.floor(whole.length / 2)));

  const all = [...images, { file: corrupt, ids: [] }];
  const csv = path.join(root, "labels.csv");
  const csvRows = all.map((img, i) => `${img.file},${img.ids.join(i % 2 === 0 ? ";" : "|")}`);
  await fs.writeFile(csv, ["path,policy_ids", ...csvRows, ""].join("\n"));
  const jsonl = path.join(root, "labels.jsonl");
  await fs.writeFile(jsonl, all.map((img) => JSON.stringify({ path: img.file, policy_ids: img.ids })).join("\n") + "\n");

  const policies = path.join(dir, "policies.yaml");
  await fs.writeFile(policies, EVAL_POLICIES);
  const otherPolicies = path.join(dir, "policies-other.yaml");
  await fs.writeFile(otherPolicies, EVAL_OTHER_POLICIES);
  return { root, images, corrupt, csv, jsonl, policies, otherPolicies };
}
