import type { Command } from "commander";
import { ClipModel } from "../clip/clip-model.js";
import { compilePolicies, formatProblem, loadPolicyFile, PolicyValidationError, type PolicySet } from "../policies/index.js";
import { loadConfig } from "../shared/config.js";
import { EXIT, reportFatal } from "./cli-errors.js";

function describe(set: PolicySet): string[] {
  const lines = [`${set.file}: ${set.policies.length} ${set.policies.length === 1 ? "policy" : "policies"}, version ${set.version}`];
  for (const p of set.policies) {
    const thresholds = [
      p.thresholds.review !== undefined ? `review >= ${p.thresholds.review}` : undefined,
      p.thresholds.block !== undefined ? `block >= ${p.thresholds.block}` : undefined,
    ].filter((t) => t !== undefined);
    const negatives = p.negatives.length > 0 ? `, ${p.negatives.length} negatives` : "";
    lines.push(`  ${p.id}: ${p.scoring}, ${p.prompts.length} prompts${negatives}, ${thresholds.join(", ")}`);
  }
  return lines;
}

/** `clipguard policies check FILE [--model DIR]`: problems with line numbers (exit 2) or a summary (exit 0). */
async function check(file: string, flags: { model?: string; variant?: string }): Promise<number> {
  let set: PolicySet;
  try {
    set = await loadPolicyFile(file);
  } catch (err) {
    if (err instanceof PolicyValidationError) {
      for (const p of err.problems) process.stderr.write(formatProblem(p) + "\n");
      return EXIT.usage;
    }
    return reportFatal(err);
  }
  const lines = describe(set);
  if (flags.model !== undefined) {
    try {
      const config = loadConfig();
      const model = await ClipModel.load(flags.model, { variant: flags.variant ?? config.CLIPGUARD_MODEL_VARIANT ?? "fp32", intraOpThreads: config.CLIPGUARD_ORT_THREADS });
      await compilePolicies(set, model);
      for (const p of set.policies) {
        for (const text of [...p.prompts, ...p.negatives]) {
          if (model.tokenizer.encode(text).length >= model.tokenizer.contextLength) {
            lines.push(`  warning: ${p.id}: "${text.slice(0, 40)}…" is truncated to ${model.tokenizer.contextLength} tokens`);
          }
        }
      }
      lines.push(`  all prompts embedded with ${model.info.name} (fingerprint ${model.info.fingerprint})`);
      await model.release();
    } catch (err) {
      return reportFatal(err);
    }
  }
  process.stdout.write(lines.join("\n") + "\n");
  return EXIT.ok;
}

export function registerPoliciesCommand(program: Command): void {
  const policies = program.command("policies").description("work with policy files");
  policies
    .command("check")
    .description("validate a policies file; with --model, also embed every prompt")
    .argument("<file>", "policies YAML file")
    .option("--model <dir>", "also load this model and embed every prompt")
    .option("--variant <name>", "ONNX variant of --model")
    .action(async (file: string, flags: { model?: string; variant?: string }) => {
      process.exitCode = await check(file, flags);
    });
}
