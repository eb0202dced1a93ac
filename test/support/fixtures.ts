import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import sharp from "sharp";

/** A solid-colour PNG of the given size, made at test time. */
export async function solidPng(rgb: [number, number, number], width = 64, height = 48): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } })
    .png()
    .toBuffer();
}

export const RED: [number, number, number] = [220, 20, 30];
export const BLUE: [number, number, number] = [20, 40, 220];
export const GRAY: [number, number, number] = [128, 128, 128];

/**
 * A policies file for the demo model: `red` flags mostly-red images, `blue` mostly-blue ones.
 * `tag` makes the prompt texts unique to one test, so text-cache counts start from zero; unknown
 * words map to nothing in the demo tokenizer, so it does not change any score.
 */
export function colourPolicies(tag: string, redReview = 0.5, redBlock = 0.8): string {
  return [
    "version: 1",
    "policies:",
    "  - id: red",
    "    description: mostly red images",
    `    prompts: [a mostly red image ${tag}, a red picture ${tag}]`,
    `    thresholds: { review: ${redReview}, block: ${redBlock} }`,
    "  - id: blue",
    `    prompts: [a blue photo ${tag}]`,
    "    thresholds: { review: 0.5 }",
    "",
  ].join("\n");
}

export async function tempDir(prefix = "clipguard-test-"): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}
