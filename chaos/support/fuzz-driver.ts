/**
 * The parent side of the fuzzing scenario: builds input `i` from (seed, i), sends it to a child
 * process (fuzz-child.ts) and waits for the answer under a watchdog. A child that dies is a crash,
 * one that does not answer within `hangMs` is killed and reported as a hang; either way the input
 * is saved under `saveDir` and a new child takes over. Several lanes (children) run side by side.
 */
import { fork, type ChildProcess } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { FuzzAnswer } from "./fuzz-child.js";
import { inputSeed, mutate, Rng } from "./fuzz-mutate.js";
import type { SeedFile } from "./fuzz-seeds.js";

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), "fuzz-child.ts");

export interface FuzzInput {
  index: number;
  seedName: string;
  bytes: Uint8Array;
  what: string;
}

/** Input `index` of the run seeded with `runSeed`: a seed file picked and mutated by the input's own PRNG. */
export function fuzzInput(seeds: readonly SeedFile[], runSeed: number, index: number): FuzzInput {
  const rng = new Rng(inputSeed(runSeed, index));
  const seed = rng.pick(seeds);
  return { index, seedName: seed.name, ...mutate(seed.bytes, rng) };
}

export interface FuzzFinding {
  kind: "crash" | "hang" | "untyped" | "bad-output" | "internal";
  index: number;
  seedName: string;
  what: string;
  detail: string;
  /** Where the input was saved. */
  file: string;
}

export interface FuzzRunResult {
  inputs: number;
  /** Outcome → count: "decoded", each CLIPGUARD_E_* code, "untyped", "bad-output", "crash", "hang". */
  outcomes: Record<string, number>;
  findings: FuzzFinding[];
  slowest: { index: number; ms: number; seedName: string; what: string };
  seconds: number;
  childStarts: number;
  peakChildRssMiB: number;
}

export interface FuzzRunOptions {
  seeds: readonly SeedFile[];
  seed: number;
  inputs: number;
  /** Children running side by side. @default 2 */
  lanes?: number;
  /** An input without an answer for this long is a hang. @default 5000 */
  hangMs?: number;
  saveDir: string;
}

interface Child {
  process: ChildProcess;
  exited: Promise<void>;
  stderrTail: string[];
}

async function startChild(): Promise<Child> {
  const child = fork(CHILD, [], { execArgv: ["--import", "tsx"], serialization: "advanced", stdio: ["ignore", "ignore", "pipe", "ipc"] });
  const stderrTail: string[] = [];
  child.stderr?.setEncoding("utf8").on("data", (text: string) => {
    stderrTail.push(...text.split("\n").filter((l) => l.trim() !== ""));
    stderrTail.splice(0, Math.max(0, stderrTail.length - 20));
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the fuzz child did not start: ${stderrTail.join(" | ")}`)), 60_000);
    child.once("message", () => {
      clearTimeout(timer);
      resolve();
    });
    void exited.then(() => reject(new Error(`the fuzz child exited at start: ${stderrTail.join(" | ")}`)));
  });
  return { process: child, exited, stderrTail };
}

type Attempt = { kind: "answer"; answer: FuzzAnswer } | { kind: "crash"; detail: string } | { kind: "hang" };

function runOne(child: Child, input: FuzzInput, hangMs: number): Promise<Attempt> {
  return new Promise((resolve) => {
    const done = (attempt: Attempt) => {
      clearTimeout(timer);
      child.process.off("message", onMessage);
      child.process.off("exit", onExit);
      resolve(attempt);
    };
    const onMessage = (message: FuzzAnswer) => {
      if (message.index === input.index) done({ kind: "answer", answer: message });
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      done({ kind: "crash", detail: `the child died (exit ${code}, signal ${signal}); stderr: ${child.stderrTail.slice(-5).join(" | ")}` });
    const timer = setTimeout(() => {
      done({ kind: "hang" });
      child.process.kill("SIGKILL");
    }, hangMs);
    child.process.on("message", onMessage);
    child.process.once("exit", onExit);
    child.process.send({ index: input.index, bytes: input.bytes });
  });
}

export async function runFuzz(options: FuzzRunOptions): Promise<FuzzRunResult> {
  const hangMs = options.hangMs ?? 5_000;
  const outcomes: Record<string, number> = {};
  const findings: FuzzFinding[] = [];
  let slowest = { index: -1, ms: 0, seedName: "", what: "" };
  let next = 0;
  let childStarts = 0;
  let peakChildRssMiB = 0;
  await mkdir(options.saveDir, { recursive: true });
  const started = performance.now();

  const save = async (input: FuzzInput, kind: FuzzFinding["kind"], detail: string) => {
    const file = path.join(options.saveDir, `fuzz-${options.seed}-${input.index}-${kind}.bin`);
    await writeFile(file, input.bytes);
    await writeFile(`${file}.json`, JSON.stringify({ seed: options.seed, index: input.index, seedName: input.seedName, what: input.what, kind, detail }, null, 2));
    findings.push({ kind, index: input.index, seedName: input.seedName, what: input.what, detail, file });
  };

  const lane = async () => {
    let child: Child | undefined;
    try {
      while (next < options.inputs) {
        const input = fuzzInput(options.seeds, options.seed, next++);
        if (child === undefined) {
          child = await startChild();
          childStarts += 1;
        }
        const attempt = await runOne(child, input, hangMs);
        if (attempt.kind === "answer") {
          const { answer } = attempt;
          outcomes[answer.outcome] = (outcomes[answer.outcome] ?? 0) + 1;
          peakChildRssMiB = Math.max(peakChildRssMiB, answer.rssMiB);
          if (answer.ms > slowest.ms) slowest = { index: input.index, ms: answer.ms, seedName: input.seedName, what: input.what };
          if (answer.outcome === "untyped" || answer.outcome === "bad-output") await save(input, answer.outcome, answer.detail ?? "");
          // an internal fault is retryable: a corrupt image must get an image code instead, or it is retried for nothing
          if (answer.outcome === "CLIPGUARD_E_INTERNAL") await save(input, "internal", answer.detail ?? "");
        } else {
          outcomes[attempt.kind] = (outcomes[attempt.kind] ?? 0) + 1;
          await save(input, attempt.kind, attempt.kind === "crash" ? attempt.detail : `no answer within ${hangMs} ms; the child was killed`);
          await child.exited;
          child = undefined;
        }
      }
    } finally {
      if (child !== undefined) {
        child.process.kill("SIGTERM");
        await child.exited;
      }
    }
  };
  await Promise.all(Array.from({ length: options.lanes ?? 2 }, lane));
  return { inputs: options.inputs, outcomes, findings, slowest, seconds: (performance.now() - started) / 1000, childStarts, peakChildRssMiB };
}
