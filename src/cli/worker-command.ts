import type { Command } from "commander";
import { loadConfig } from "../shared/config.js";
import { createLogger } from "../shared/logger.js";
import { startModerationWorker } from "../worker/moderation-worker.js";
import { EXIT, reportFatal } from "./cli-errors.js";
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
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    worker
      .shutdown()
      .then(() => {
        logger.info("stopped");
        logger.flush();
        process.exit(EXIT.ok);
      })
      .catch((err: unknown) => {
        logger.error({ err }, "shutdown failed");
        logger.flush();
        process.exit(EXIT.itemErrors);
      });
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

export function registerWorkerCommand(program: Command): void {
  addModelFlags(program.command("worker").description("consume moderation jobs from Redis (BullMQ) and publish verdicts")).action(
    async (flags: ModelFlags) => {
      await runWorker(flags);
    },
  );
}
