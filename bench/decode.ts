/**
 * `decode`: CPU milliseconds to check, decode and preprocess one image of each size, one image at
 * a time on one libvips thread, with the engine's settings (shrink-on-load as configured). With
 * the bare tower's CPU milliseconds per image, this bounds what any pipeline can reach on this
 * machine: every image costs at least tower + decode CPU time, so
 *   service/bare ≤ tower / (tower + decode)
 * when all cores are shared by both (bench/report.ts prints the bound beside the targets).
 */
import sharp from "sharp";
import { configureImageDecoding } from "../src/clip/image-decode.js";
import { preprocessImage } from "../src/clip/preprocess.js";
import type { PreprocessConfig } from "../src/clip/types.js";
import { loadConfig } from "../src/shared/config.js";
import type { BenchImage } from "./images.js";

export interface DecodeRun {
  label: string;
  images: readonly BenchImage[];
  /** Timed decodes (after one warm-up pass over the images). */
  count: number;
}

/** Size key → CPU ms per image. */
export async function measureDecode(preprocess: PreprocessConfig, runs: readonly DecodeRun[], progress: (line: string) => void): Promise<Record<string, number>> {
  const config = loadConfig(process.env);
  const limits = { maxBytes: config.CLIPGUARD_MAX_IMAGE_BYTES, maxPixels: config.CLIPGUARD_MAX_PIXELS };
  const options = { fastShrinkOnLoad: config.CLIPGUARD_FAST_JPEG };
  const sharpThreads = sharp.concurrency();
  configureImageDecoding({ threadsPerImage: config.CLIPGUARD_DECODE_THREADS });
  const result: Record<string, number> = {};
  try {
    for (const run of runs) {
      for (const image of run.images) await preprocessImage(image.bytes, preprocess, limits, options);
      const before = process.cpuUsage();
      for (let i = 0; i < run.count; i++) await preprocessImage(run.images[i % run.images.length]!.bytes, preprocess, limits, options);
      const cpu = process.cpuUsage(before);
      result[run.label] = (cpu.user + cpu.system) / 1000 / run.count;
      progress(`decode: ${run.label}: ${result[run.label]!.toFixed(1)} CPU ms per image (${run.count} images)`);
    }
  } finally {
    sharp.concurrency(sharpThreads);
    sharp.cache(true);
  }
  return result;
}
