import type { Command } from "commander";
import type { Config } from "../shared/config.js";

/** Flags shared by every command that loads a model and policies. */
export interface ModelFlags {
  model?: string;
  variant?: string;
  policies?: string;
}

export function addModelFlags(command: Command): Command {
  return command
    .option("--model <dir>", "CLIP model directory in the Hugging Face ONNX layout (env CLIPGUARD_MODEL_DIR; default: the bundled demo model)")
    .option("--variant <name>", "ONNX variant: fp32, quantized, fp16, … (env CLIPGUARD_MODEL_VARIANT; default fp32)")
    .option("--policies <file>", "policies YAML file (env CLIPGUARD_POLICIES; default examples/policies.yaml)");
}

/** Flags win over the environment, the environment over the bundled defaults. */
export function resolveModelFlags(flags: ModelFlags, config: Config): { modelDir: string; variant: string; policiesFile: string } {
  return {
    modelDir: flags.model ?? config.CLIPGUARD_MODEL_DIR,
    variant: flags.variant ?? config.CLIPGUARD_MODEL_VARIANT ?? "fp32",
    policiesFile: flags.policies ?? config.CLIPGUARD_POLICIES,
  };
}
