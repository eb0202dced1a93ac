import type { Command } from "commander";
import { DEFAULT_MODEL_REPO, pullModel } from "../clip/model-download.js";
import { loadConfig } from "../shared/config.js";
import { EXIT, reportFatal } from "./cli-errors.js";
import { barReporter, lineReporter } from "./download-progress.js";

interface PullFlags {
  variant: string;
  revision: string;
  dir?: string;
  force?: boolean;
}

/**
 * `clipguard model pull [REPO]`: downloads a CLIP export from the Hugging Face Hub (HF_ENDPOINT,
 * HF_TOKEN) into a model directory. Progress on stderr (a bar on a terminal, lines otherwise), one
 * summary line on stdout. Exit 0 when the directory is in place, 2 on any error (one line with its
 * code); a failed download leaves its temporary directory for the next run to resume.
 */
async function pull(repo: string, flags: PullFlags): Promise<number> {
  const reporter = process.stderr.isTTY ? barReporter(process.stderr) : lineReporter(process.stderr);
  try {
    const config = loadConfig();
    const result = await pullModel({
      repo,
      revision: flags.revision,
      variant: flags.variant,
      ...(flags.dir !== undefined ? { dir: flags.dir } : {}),
      force: flags.force === true,
      endpoint: config.HF_ENDPOINT,
      token: config.HF_TOKEN,
      reporter,
    });
    process.stdout.write(`pulled ${result.repo}@${result.commit.slice(0, 12)} (variant ${result.variant}) into ${result.dir}\n`);
    return EXIT.ok;
  } catch (err) {
    // a bar may be mid-line
    if (process.stderr.isTTY) process.stderr.write("\n");
    return reportFatal(err);
  }
}

export function registerModelCommand(program: Command): void {
  const model = program.command("model").description("manage model directories");
  model
    .command("pull")
    .description("download a CLIP export in the Hugging Face ONNX layout from the Hub into a model directory")
    .argument("[repo]", "Hub repository, owner/name", DEFAULT_MODEL_REPO)
    .option("--variant <name>", "ONNX variant: fp32 (onnx/*_model.onnx), quantized, fp16, … (onnx/*_model_<variant>.onnx)", "fp32")
    .option("--revision <rev>", "branch, tag or commit", "main")
    .option("--dir <dir>", "target model directory (default: models/<repo name>)")
    .option("--force", "replace the target directory if it exists")
    .action(async (repo: string, flags: PullFlags) => {
      process.exitCode = await pull(repo, flags);
    });
}
