import type { Command } from "commander";
import { loadConfig } from "../shared/config.js";
import { createLogger } from "../shared/logger.js";
import { startModerationWorker } from "../worker/moderation-worker.js";
import { reportFatal } from "./cli-errors.js";
import { stopOnSignal } from "./stop-on-signal.js";
import { addModelFlags, resolveModelFlags, type ModelFlags } from "./model-options.js";

/** `clipguard worker`: consume the queue until SIGTERM/SIGINT, then shut down gracefully and exit 0. */
async function runWorker(flags: ModelFlags): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    process.exitCode = reportFatal(err);
    return;
  }
  const logger = createLogger(config.CLIPGUARD_LOG_LEVEL);
  let worker;
  try {
    worker = await startModerationWorker(config, resolveModelFlags(flags, config), logger);
  } catch (err) {
    logger.flush();
    process.exitCode = reportFatal(err);
    return;
  }
  stopOnSignal(logger, () => worker.shutdown());
}

export function registerWorkerCommand(program: Command): void {
  addModelFlags(program.command("worker").description("consume moderation jobs from Redis (BullMQ) and publish verdicts")).action(
    async (flags: ModelFlags) => {
      await runWorker(flags);
    },
  );
}
