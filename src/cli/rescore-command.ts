import type { Command } from "commander";
import { runRescore, type RescoreRunSummary } from "../policies/rescore-run.js";
import type { RescoreWindow } from "../policies/rescore-window.js";
import { loadConfig } from "../shared/config.js";
import { ClipguardError } from "../shared/errors.js";
import { createProducerConnection } from "../shared/redis.js";
import { EXIT, reportFatal } from "./cli-errors.js";
import { resolveModelFlags, type ModelFlags } from "./model-options.js";

interface RescoreFlags extends ModelFlags {
  since?: string;
  from?: string;
  json?: boolean;
}

/** The one summary line a person reads. */
export function summaryLine(s: RescoreRunSummary): string {
  const reasons = Object.entries(s.skippedReasons)
    .filter(([, n]) => n > 0)
    .map(([reason, n]) => `${reason} ${n}`);
  return (
    `rescored ${s.seen} verdicts against policy version ${s.policyVersion}: ${s.changed} changed, ${s.unchanged} unchanged, ` +
    `${s.skipped} skipped${reasons.length > 0 ? ` (${reasons.join(", ")})` : ""}; ` +
    `vision tower runs ${s.visionRuns}, text tower runs ${s.textRuns}`
  );
}

/**
 * `clipguard rescore --since DURATION | --from ID`: re-judges the verdicts of that window from the
 * stored image embeddings against the policies file, publishes the changed ones to
 * CLIPGUARD_RESCORE_STREAM and prints a summary line (JSON with --json). Exit 0 when it ran
 * (skipped images included), 2 when it could not (usage, config, model, policies, Redis).
 */
async function rescore(flags: RescoreFlags): Promise<number> {
  let redis;
  try {
    if ((flags.since === undefined) === (flags.from === undefined)) {
      throw new ClipguardError("CLIPGUARD_E_CONFIG", "give exactly one of --since DURATION and --from STREAM_ID");
    }
    const window: RescoreWindow = flags.since !== undefined ? { since: flags.since } : { from: flags.from ?? "0" };
    const config = loadConfig();
    redis = createProducerConnection(config.REDIS_URL, { lazyConnect: true });
    redis.on("error", () => undefined); // reported by the failing command below
    await redis.connect().catch((err: unknown) => {
      throw new ClipguardError("CLIPGUARD_E_REDIS", `Redis is unreachable: ${err instanceof Error ? err.message : String(err)}`);
    });
    const summary = await runRescore(config, { ...resolveModelFlags(flags, config), window }, redis);
    process.stdout.write((flags.json === true ? JSON.stringify(summary) : summaryLine(summary)) + "\n");
    return EXIT.ok;
  } catch (err) {
    return reportFatal(err);
  } finally {
    redis?.disconnect();
  }
}

export function registerRescoreCommand(program: Command): void {
  program
    .command("rescore")
    .description("re-judge past verdicts from stored image embeddings against a policies file, without the image tower")
    .option("--since <duration>", "the verdicts of the last DURATION: 90s, 15m, 2h, 7d")
    .option("--from <id>", "the verdicts after this verdict stream id (0: the whole stream)")
    .option("--policies <file>", "policies YAML file to judge against (env CLIPGUARD_POLICIES)")
    .option("--model <dir>", "CLIP model directory; must be the model that made the embeddings (env CLIPGUARD_MODEL_DIR)")
    .option("--variant <name>", "ONNX variant (env CLIPGUARD_MODEL_VARIANT)")
    .option("--json", "print the summary as JSON")
    .action(async (flags: RescoreFlags) => {
      process.exitCode = await rescore(flags);
    });
}
