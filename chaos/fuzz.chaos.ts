/**
 * 9. Fuzzing: mutated images derived from the fixture photos through the worker's decode path, in
 * child processes (fuzz-child.ts), so that a native crash shows as a dead child and a hang as a
 * missing answer. Seeded: CHAOS_FUZZ_SEED=<n> replays a run; each failing input is saved under
 * .cache/chaos/ with what was done to which seed file.
 */
import { randomInt } from "node:crypto";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { report } from "./support/figures.js";
import { runFuzz } from "./support/fuzz-driver.js";
import { seedCorpus } from "./support/fuzz-seeds.js";
import { sized } from "./support/profile.js";

const INPUTS = sized({ quick: 1_500, full: 10_000 });
const HANG_MS = 5_000;
const SAVE_DIR = path.resolve(".cache/chaos");

describe("9. Fuzzing", () => {
  it("decodes every mutated image or refuses it with an error code, without a crash or a hang", async (ctx) => {
    const fromEnv = process.env["CHAOS_FUZZ_SEED"];
    const seed = fromEnv !== undefined && fromEnv !== "" ? Number(fromEnv) : randomInt(2 ** 31);
    process.stdout.write(`fuzzing: seed ${seed} (CHAOS_FUZZ_SEED=${seed} replays this run)\n`);
    const seeds = await seedCorpus();
    const result = await runFuzz({ seeds, seed, inputs: INPUTS, hangMs: HANG_MS, saveDir: SAVE_DIR });
    const failures = result.findings.length;
    const codes = Object.entries(result.outcomes).sort(([a], [b]) => a.localeCompare(b));

    report(ctx, {
      title: "9. Fuzzing",
      method:
        `${INPUTS} inputs, each one to three seeded mutations (bit flips; bytes overwritten with 0, 0xff, 0x7f, 0x80; chunk, segment and box length fields and header dimensions set to boundary values; truncation; ranges duplicated or removed; PNG CRCs recomputed half the time) ` +
        `of one of ${seeds.length} seed files: the fixture photos and their re-encodings as baseline and progressive JPEG, RGBA and palette PNG, lossy, lossless and animated WebP, LZW, deflate and JPEG TIFF, AVIF, and still and animated GIF. ` +
        "Each input runs through the worker's decode path (format allowlist and header checks, crop plan, every sampled frame decoded and preprocessed, tiles cut; the worker's limits and decode settings) in a child process, two children side by side; " +
        `a child that dies is a crash, one that has not answered after ${HANG_MS / 1000} s is killed and reported as a hang.`,
      criteria:
        `no crash, no hang over ${HANG_MS / 1000} s, and every input either decoded or refused with a CLIPGUARD_E_* code of bad input ` +
        "(no exception without a code, no CLIPGUARD_E_INTERNAL, which is retryable, no non-finite pixel value).",
      summary: {},
      figures: {
        seed,
        "inputs run": INPUTS,
        "inputs/s": Math.round(INPUTS / result.seconds),
        "slowest input (ms)": Math.round(result.slowest.ms),
        "peak child RSS (MiB)": Math.round(result.peakChildRssMiB),
        "child processes started": result.childStarts,
        ...Object.fromEntries(codes.map(([outcome, count]) => [`outcome: ${outcome}`, count])),
      },
      notes: [
        `slowest input: #${result.slowest.index}, ${result.slowest.seedName} (${result.slowest.what}), ${Math.round(result.slowest.ms)} ms.`,
        ...result.findings.slice(0, 20).map((f) => `${f.kind}: input #${f.index} (${f.seedName}: ${f.what}): ${f.detail}; saved as ${path.relative(process.cwd(), f.file)}`),
      ],
    });

    expect(result.findings.map((f) => `${f.kind} #${f.index}: ${f.detail}`)).toEqual([]);
    expect(failures).toBe(0);
    expect(result.outcomes["decoded"] ?? 0).toBeGreaterThan(0);
  });
});
