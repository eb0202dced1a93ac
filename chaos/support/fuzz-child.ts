/**
 * The fuzzing child process: runs each input it is sent through the worker's decode path and
 * answers with the outcome. It is a process of its own so that a native crash in a decoder (a
 * segfault, an abort) shows as this process dying, which the parent (fuzz-driver.ts) reports with
 * the input that killed it, and a hang as a missing answer, which the parent's watchdog ends.
 *
 * The decode path is the worker's (src/policies/image-moderator.ts → preprocessCrops): the format
 * allowlist and header checks (inspectImage), the crop plan with frames and tiles, every frame
 * decoded and preprocessed, the tiles cut; with the worker's decode settings
 * (configureImageDecoding, the default limits of CLIPGUARD_MAX_IMAGE_BYTES / _MAX_PIXELS /
 * _FAST_JPEG) and the demo model's preprocessor config (CLIP's 224 px).
 *
 * Replay a saved input: `node --import tsx chaos/support/fuzz-child.ts .cache/chaos/fuzz-<seed>-<index>-<kind>.bin`
 * prints its outcome.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { configureImageDecoding } from "../../src/clip/image-decode.js";
import { preprocessCrops } from "../../src/clip/image-crops.js";
import { parsePreprocessorConfig } from "../../src/clip/preprocess.js";
import { imageSamplingFromConfig } from "../../src/policies/image-sampling.js";
import { loadConfig } from "../../src/shared/config.js";
import { isClipguardError } from "../../src/shared/errors.js";

/** Parent → child: one input. */
export interface FuzzRequest {
  index: number;
  bytes: Uint8Array;
}

/** Child → parent: what became of it. */
export interface FuzzAnswer {
  index: number;
  /** "decoded", a CLIPGUARD_E_* code, "untyped" (an exception without a code) or "bad-output". */
  outcome: string;
  detail?: string;
  ms: number;
  rssMiB: number;
}

const config = loadConfig({});
const limits = { maxBytes: config.CLIPGUARD_MAX_IMAGE_BYTES, maxPixels: config.CLIPGUARD_MAX_PIXELS, fastShrinkOnLoad: config.CLIPGUARD_FAST_JPEG };
const { sampling } = imageSamplingFromConfig(config);
const preprocess = parsePreprocessorConfig(JSON.parse(readFileSync(path.resolve("models/demo/preprocessor_config.json"), "utf8")));
configureImageDecoding({ threadsPerImage: config.CLIPGUARD_DECODE_THREADS });

async function run(bytes: Uint8Array): Promise<{ outcome: string; detail?: string }> {
  try {
    const crops = await preprocessCrops(bytes, preprocess, sampling, true, limits, limits);
    const expected = crops.items.length * 3 * preprocess.cropWidth * preprocess.cropHeight;
    if (crops.pixels.length !== expected) return { outcome: "bad-output", detail: `${crops.pixels.length} values for ${crops.items.length} crops` };
    for (const value of crops.pixels) if (!Number.isFinite(value)) return { outcome: "bad-output", detail: "a non-finite pixel value" };
    return { outcome: "decoded" };
  } catch (err) {
    if (isClipguardError(err)) return { outcome: err.code, detail: err.message.split("\n")[0] ?? "" };
    const name = err instanceof Error ? err.name : typeof err;
    const message = err instanceof Error ? (err.message.split("\n")[0] ?? "") : String(err);
    return { outcome: "untyped", detail: `${name}: ${message}` };
  }
}

const replay = process.argv[2];
if (replay !== undefined) {
  const started = performance.now();
  const result = await run(readFileSync(replay));
  process.stdout.write(`${JSON.stringify({ file: replay, ...result, ms: Math.round(performance.now() - started) })}\n`);
  process.exit(0);
}

process.on("message", (message: FuzzRequest) => {
  const started = performance.now();
  void run(message.bytes).then((result) => {
    const answer: FuzzAnswer = { index: message.index, ...result, ms: performance.now() - started, rssMiB: process.memoryUsage().rss / 2 ** 20 };
    process.send?.(answer);
  });
});
process.send?.({ ready: true });
