import type { Logger } from "../shared/logger.js";
import { EXIT } from "./cli-errors.js";

/**
 * Runs `shutdown` once on the first SIGTERM or SIGINT, then exits 0 (1 when shutdown fails).
 * Services (worker, API) call this once they are up.
 */
export function stopOnSignal(logger: Logger, shutdown: () => Promise<void>): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    shutdown()
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
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
