import cliProgress from "cli-progress";
import { Option, type Command } from "commander";
import type { FailedImage } from "../eval/image-embeddings.js";
import { DEFAULT_TARGETS, NEGATIVES_MODES, type NegativesMode } from "../eval/policy-evaluation.js";
import { runEvaluation } from "../eval/run-evaluation.js";
import { loadConfig } from "../shared/config.js";
import { ClipguardError } from "../shared/errors.js";
import { EXIT, reportFatal } from "./cli-errors.js";
import { addModelFlags, resolveModelFlags, type ModelFlags } from "./model-options.js";

/**
 * `clipguard eval --labels LABELS`: labelled examples → per-policy metrics, suggested thresholds,
 * charts and a report folder. A summary goes to stdout, progress and image failures to stderr.
 * Exit 0 when the report was written (images that failed are listed in it, not fatal), 2 when
 * nothing could run (usage, config, model, policies, labels).
 */
interface EvalFlags extends ModelFlags {
  labels: string;
  out: string;
  cache?: string;
  targetPrecision?: string;
  targetRecall?: string;
  negatives: NegativesMode;
  write?: boolean;
  compare?: string;
}

function rate(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n <= 0 || n > 1) {
    throw new ClipguardError("CLIPGUARD_E_CONFIG", `${flag} must be a number in (0, 1], got ${JSON.stringify(value)}`);
  }
  return n;
}

/** A bar on a terminal; plain lines at every tenth otherwise (logs, CI). */
function progressReporter(): { onProgress: (done: number, total: number) => void; onFailure: (f: FailedImage) => void; stop: () => void } {
  const warn = (f: FailedImage) => process.stderr.write(`clipguard: warning: skipped ${f.path} (${f.origin}): ${f.message.replaceAll("\n", "; ")} [${f.code}]\n`);
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { stream: process.stderr, format: "embedding images [{bar}] {value}/{total} · {eta_formatted} left", hideCursor: true, clearOnComplete: true },
      cliProgress.Presets.shades_classic,
    );
    const failures: FailedImage[] = [];
    let started = false;
    const stop = () => {
      if (started) bar.stop();
      started = false;
      // printed after the bar, which would otherwise overwrite them
      for (const f of failures.splice(0)) warn(f);
    };
    return {
      onProgress: (done, total) => {
        if (!started) bar.start(total, 0);
        started = true;
        bar.update(done);
        if (done === total) stop();
      },
      onFailure: (f) => failures.push(f),
      stop,
    };
  }
  let lastTenth = -1;
  return {
    onProgress: (done, total) => {
      const tenth = Math.floor((done * 10) / total);
      if (tenth !== lastTenth) process.stderr.write(`clipguard: embedded ${done}/${total} images\n`);
      lastTenth = tenth;
    },
    onFailure: warn,
    stop: () => undefined,
  };
}

const fmt = (x: number | null): string => (x === null ? "n/a" : x.toFixed(4));
const th = (x: number | undefined): string => (x === undefined ? "–" : String(x));

async function evaluate(flags: EvalFlags): Promise<number> {
  const progress = progressReporter();
  try {
    const config = loadConfig();
    const { modelDir, variant, policiesFile } = resolveModelFlags(flags, config);
    const targets = {
      reviewRecall: rate("--target-recall", flags.targetRecall, DEFAULT_TARGETS.reviewRecall),
      blockPrecision: rate("--target-precision", flags.targetPrecision, DEFAULT_TARGETS.blockPrecision),
    };
    const cacheDir = flags.cache ?? config.CLIPGUARD_EVAL_CACHE;
    const { report, files } = await runEvaluation({
      modelDir,
      variant,
      intraOpThreads: config.CLIPGUARD_ORT_THREADS,
      policiesFile,
      labels: flags.labels,
      outDir: flags.out,
      ...(cacheDir !== undefined ? { cacheDir } : {}),
      negatives: flags.negatives,
      targets,
      ...(flags.compare !== undefined ? { compareFile: flags.compare } : {}),
      write: flags.write === true,
      limits: { maxBytes: config.CLIPGUARD_MAX_IMAGE_BYTES, maxPixels: config.CLIPGUARD_MAX_PIXELS },
      onProgress: progress.onProgress,
      onFailure: progress.onFailure,
    });
    progress.stop();
    const i = report.images;
    const lines = [
      `${i.total} images: ${i.embedded} embedded, ${i.fromCache} from the cache, ${i.failed} failed`,
      ...report.results.map(
        (r) =>
          `${r.id}: AUC ${fmt(r.auc)} AP ${fmt(r.averagePrecision)} (${r.positives}+/${r.negatives}-) · ` +
          `review ${th(r.current.review?.threshold)} → ${th(r.suggested.review?.threshold)} · ` +
          `block ${th(r.current.block?.threshold)} → ${th(r.suggested.block?.threshold)}`,
      ),
      ...(report.compare?.policies.map((p) => {
        const sign = (x: number | null) => (x === null ? "n/a" : `${x >= 0 ? "+" : ""}${x.toFixed(4)}`);
        return `compare ${p.id}: ΔAUC ${sign(p.aucDelta)} ΔAP ${sign(p.averagePrecisionDelta)}${p.in === "both" ? "" : ` (only in ${p.in})`}`;
      }) ?? []),
      ...files.map((f) => `wrote ${f}`),
    ];
    process.stdout.write(lines.join("\n") + "\n");
    return EXIT.ok;
  } catch (err) {
    progress.stop();
    return reportFatal(err);
  }
}

export function registerEvalCommand(program: Command): void {
  addModelFlags(
    program
      .command("eval")
      .description("calibrate policies on labelled images: metrics, suggested thresholds, charts and a report")
      .requiredOption("--labels <path>", "a folder with one sub-folder per policy id plus benign/, or a CSV/JSONL of path,policy_ids")
      .option("--out <dir>", "report folder", "eval-report")
      .option("--cache <dir>", "image-embedding cache (env CLIPGUARD_EVAL_CACHE; default <out>/embeddings)")
      .option("--target-recall <r>", `recall the suggested review threshold must reach (default ${DEFAULT_TARGETS.reviewRecall})`)
      .option("--target-precision <p>", `precision the suggested block threshold must reach (default ${DEFAULT_TARGETS.blockPrecision})`)
      .addOption(
        new Option("--negatives <mode>", "negatives of a policy: all other labelled images, or benign ones only").choices(NEGATIVES_MODES).default("all"),
      )
      .option("--write", "write <out>/policies.suggested.yaml with the suggested thresholds, comments and layout kept")
      .option("--compare <file>", "a second policies file to compare on the same embeddings (AUC/AP per policy and prompt)"),
  ).action(async (flags: EvalFlags) => {
    process.exitCode = await evaluate(flags);
  });
}
