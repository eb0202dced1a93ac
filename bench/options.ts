/**
 * Command-line options of `npm run bench` and the sizes of each mode:
 *   full (default) — for people; ~10–15 minutes on 2 cores;
 *   --quick        — for CI; fewer images and jobs, shorter timed windows, < 3 minutes;
 *   --smoke        — for the test suite: a tiny CLIP, tiny images, a handful of jobs; checks that
 *                    every figure is produced, says nothing about speed.
 */
import path from "node:path";
import { parseArgs } from "node:util";
import type { BenchModelId } from "../tools/bench-model/bench-model-spec.js";
import { REPOSITORY_ROOT } from "../tools/bench-model/bench-model-files.js";
import type { ImageSize } from "./images.js";

export type BenchMode = "full" | "quick" | "smoke";

export interface BenchSettings {
  mode: BenchMode;
  model: BenchModelId;
  /** Where results.json is written. */
  out: string;
  redisUrl: string;
  sizes: { small: ImageSize; large: ImageSize };
  /** Distinct images generated per size (jobs cycle through them, each with unique bytes). */
  distinctImages: { small: number; large: number };
  bare: { batchSizes: number[]; windowMs: number };
  /** Images scored per size (in flight at once: CLIPGUARD_CONCURRENCY, as in the worker). */
  /** Timed single-threaded decodes per size (CPU cost per image, for the bound). */
  decode: { images: { small: number; large: number } };
  engine: { images: { small: number; large: number } };
  service: {
    warmupJobs: number;
    /** Timed jobs at the large size (the small size is timed over the first RSS checkpoint's jobs). */
    largeJobs: number;
    /** Small-image jobs after which the worker's RSS is read (counted from the worker's start). */
    rssCheckpoints: [number, number];
    /** Jobs kept in flight by the producer: 3× the worker's default concurrency (16), so the worker never waits for work. */
    window: { small: number; large: number };
    duplicateSamples: number;
    /** How often /metrics is scraped for the event-loop delay. */
    scrapeMs: number;
  };
  peer: { promptCounts: [number, number]; images: [number, number] };
}

const SIZE_1MP: ImageSize = { key: "1mp", width: 1152, height: 864 };
const SIZE_12MP: ImageSize = { key: "12mp", width: 4000, height: 3000 };

function settingsFor(mode: BenchMode): Omit<BenchSettings, "out" | "redisUrl"> {
  switch (mode) {
    case "full":
      return {
        mode,
        model: "vit-b-32",
        sizes: { small: SIZE_1MP, large: SIZE_12MP },
        distinctImages: { small: 8, large: 4 },
        bare: { batchSizes: [1, 2, 4, 8, 16], windowMs: 8000 },
        decode: { images: { small: 200, large: 50 } },
        engine: { images: { small: 200, large: 100 } },
        service: {
          warmupJobs: 16,
          largeJobs: 150,
          rssCheckpoints: [1000, 5000],
          window: { small: 48, large: 48 },
          duplicateSamples: 50,
          scrapeMs: 2000,
        },
        peer: { promptCounts: [10, 50], images: [40, 16] },
      };
    case "quick":
      return {
        mode,
        model: "vit-b-32",
        sizes: { small: SIZE_1MP, large: SIZE_12MP },
        distinctImages: { small: 4, large: 2 },
        bare: { batchSizes: [1, 4, 8, 16], windowMs: 2500 },
        decode: { images: { small: 40, large: 12 } },
        engine: { images: { small: 48, large: 24 } },
        service: {
          warmupJobs: 16,
          largeJobs: 48,
          rssCheckpoints: [100, 300],
          window: { small: 48, large: 48 },
          duplicateSamples: 10,
          scrapeMs: 1000,
        },
        peer: { promptCounts: [10, 50], images: [6, 3] },
      };
    case "smoke":
      return {
        mode,
        model: "smoke",
        sizes: { small: { key: "1mp", width: 96, height: 72 }, large: { key: "12mp", width: 400, height: 300 } },
        distinctImages: { small: 2, large: 2 },
        bare: { batchSizes: [1, 2, 4, 8, 16], windowMs: 50 },
        decode: { images: { small: 4, large: 2 } },
        engine: { images: { small: 6, large: 4 } },
        service: {
          warmupJobs: 2,
          largeJobs: 4,
          rssCheckpoints: [6, 12],
          window: { small: 4, large: 4 },
          duplicateSamples: 3,
          scrapeMs: 100,
        },
        peer: { promptCounts: [10, 50], images: [2, 2] },
      };
  }
}

export const USAGE = `usage: npm run bench [-- --quick | --smoke] [--out FILE]
  (default)  full run, ~10-15 minutes: ViT-B/32 benchmark model, 1 MP and 12 MP JPEGs, 1,000/5,000-job RSS checkpoints
  --quick    CI run, < 3 minutes: fewer images and jobs, shorter windows, 100/300-job RSS checkpoints
  --smoke    harness check for the tests: tiny CLIP, tiny images, a few jobs (figures mean nothing)
  --out FILE where results are written (default bench/results.json)
Needs Redis at REDIS_URL (default redis://127.0.0.1:6379) and a build (npm run build: the service phase runs dist/).`;

/** Parses argv (without node and the script); throws with USAGE on a bad flag. */
export function parseBenchArgs(argv: readonly string[], env: NodeJS.ProcessEnv): BenchSettings | "help" {
  let values: { quick?: boolean; smoke?: boolean; out?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: { quick: { type: "boolean" }, smoke: { type: "boolean" }, out: { type: "string" }, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${USAGE}`, { cause: err });
  }
  if (values.help === true) return "help";
  if (values.quick === true && values.smoke === true) throw new Error(`--quick and --smoke exclude each other\n${USAGE}`);
  const mode: BenchMode = values.smoke === true ? "smoke" : values.quick === true ? "quick" : "full";
  return {
    ...settingsFor(mode),
    out: path.resolve(values.out ?? path.join(REPOSITORY_ROOT, "bench", "results.json")),
    redisUrl: env["REDIS_URL"] !== undefined && env["REDIS_URL"] !== "" ? env["REDIS_URL"] : "redis://127.0.0.1:6379",
  };
}
