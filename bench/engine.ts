/**
 * `engine`: in-process scoring of image files the way the worker does it, minus Redis and BullMQ:
 * read the file, decode and preprocess (sharp), run the image tower in an InferencePool, judge
 * against the compiled policies, with CLIPGUARD_CONCURRENCY images in flight so that decoding
 * overlaps inference. Every engine setting (inference threads, ORT threads, batching, decode
 * threads, JPEG fast path) comes from loadConfig(), i.e. the same environment and defaults as
 * the worker of the service phase. No image-embedding cache: every image is new.
 */
import { readFile } from "node:fs/promises";
import sharp from "sharp";
import { configureImageDecoding } from "../src/clip/image-decode.js";
import { InferencePool } from "../src/clip/inference-pool.js";
import { ImageModerator } from "../src/policies/image-moderator.js";
import { compilePolicies, loadPolicyFile, MemoryTextEmbeddingCache } from "../src/policies/index.js";
import { loadConfig } from "../src/shared/config.js";
import { withUniqueComment, type BenchImage } from "./images.js";

export interface EngineRun {
  label: string;
  images: readonly BenchImage[];
  count: number;
}

/** Runs `count` tasks with at most `concurrency` in flight. */
async function runConcurrently(count: number, concurrency: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, count) }, async () => {
    while (next < count) await task(next++);
  });
  await Promise.all(lanes);
}

export async function measureEngine(
  modelDir: string,
  policiesFile: string,
  runs: readonly EngineRun[],
  progress: (line: string) => void,
): Promise<{ imagesPerSecond: Record<string, number>; cpuCores: Record<string, number>; concurrency: number }> {
  const config = loadConfig(process.env);
  const options = { concurrency: config.CLIPGUARD_CONCURRENCY };
  // sharp's settings are per process: restored afterwards so the peer phase gets sharp's defaults
  const sharpThreads = sharp.concurrency();
  configureImageDecoding({ threadsPerImage: config.CLIPGUARD_DECODE_THREADS });
  const pool = await InferencePool.start({
    modelDir,
    threads: config.CLIPGUARD_INFERENCE_THREADS,
    intraOpThreads: config.CLIPGUARD_ORT_THREADS,
    maxBatch: config.CLIPGUARD_BATCH_MAX,
    maxBatchWaitMs: config.CLIPGUARD_BATCH_WAIT_MS,
  });
  try {
    const compiled = await compilePolicies(await loadPolicyFile(policiesFile), pool, new MemoryTextEmbeddingCache());
    const limits = { maxBytes: config.CLIPGUARD_MAX_IMAGE_BYTES, maxPixels: config.CLIPGUARD_MAX_PIXELS, fastShrinkOnLoad: config.CLIPGUARD_FAST_JPEG };
    const moderator = new ImageModerator(pool, () => compiled, limits, undefined, { decodeConcurrency: config.CLIPGUARD_DECODE_CONCURRENCY });
    const result: Record<string, number> = {};
    const cpuCores: Record<string, number> = {};
    let serial = 0;
    const score = async (image: BenchImage) => {
      const bytes = withUniqueComment(await readFile(image.path), `engine-${serial++}`);
      const { verdict } = await moderator.moderate(bytes);
      if (verdict.decision === "error") throw new Error(`engine: ${image.path}: ${verdict.error?.code ?? ""} ${verdict.error?.message ?? ""}`);
    };
    for (const run of runs) {
      const pick = (i: number): BenchImage => run.images[i % run.images.length]!;
      await runConcurrently(options.concurrency, options.concurrency, (i) => score(pick(i))); // warm-up
      const cpuBefore = process.cpuUsage();
      const started = performance.now();
      await runConcurrently(run.count, options.concurrency, (i) => score(pick(i)));
      const elapsed = performance.now() - started;
      const cpu = process.cpuUsage(cpuBefore);
      result[run.label] = (run.count * 1000) / elapsed;
      cpuCores[run.label] = (cpu.user + cpu.system) / 1000 / elapsed;
      progress(`engine: ${run.label}: ${result[run.label]!.toFixed(2)} images/s (${run.count} images, ${options.concurrency} in flight)`);
    }
    return { imagesPerSecond: result, cpuCores, concurrency: options.concurrency };
  } finally {
    await pool.close();
    sharp.concurrency(sharpThreads);
    sharp.cache(true);
  }
}
