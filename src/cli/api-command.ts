import type { Command } from "commander";
import type { FastifyInstance } from "fastify";
import { buildApiServer } from "../api/api-server.js";
import { loadConfig } from "../shared/config.js";
import { ClipguardError } from "../shared/errors.js";
import { createLogger } from "../shared/logger.js";
import { reportFatal } from "./cli-errors.js";
import { stopOnSignal } from "./stop-on-signal.js";

/**
 * `clipguard api`: serve the HTTP API on CLIPGUARD_API_HOST:CLIPGUARD_API_PORT until SIGTERM/SIGINT,
 * then stop taking requests, finish the open ones and exit 0. Exit 2 when it cannot start
 * (bad config, no API keys without CLIPGUARD_API_AUTH=off, port in use).
 */
async function runApi(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    process.exitCode = reportFatal(err);
    return;
  }
  const logger = createLogger(config.CLIPGUARD_LOG_LEVEL);
  let app: FastifyInstance | undefined;
  try {
    app = await buildApiServer(config, { logger });
    await app.listen({ host: config.CLIPGUARD_API_HOST, port: config.CLIPGUARD_API_PORT });
  } catch (err) {
    // close the Redis connection too, or the process would stay alive reconnecting
    await app?.close().catch(() => {});
    logger.flush();
    const code = (err as NodeJS.ErrnoException).code;
    process.exitCode = reportFatal(
      code === "EADDRINUSE" || code === "EACCES"
        ? new ClipguardError("CLIPGUARD_E_CONFIG", `cannot listen on ${config.CLIPGUARD_API_HOST}:${config.CLIPGUARD_API_PORT} (${code}); set CLIPGUARD_API_PORT`)
        : err,
    );
    return;
  }
  const server = app;
  const address = server.server.address();
  const port = typeof address === "object" && address !== null ? address.port : config.CLIPGUARD_API_PORT;
  if (config.CLIPGUARD_API_AUTH === "off") logger.warn("authentication is off (CLIPGUARD_API_AUTH=off): anyone who reaches the port can enqueue jobs");
  logger.info({ host: config.CLIPGUARD_API_HOST, port, queue: config.CLIPGUARD_QUEUE, keyCount: config.CLIPGUARD_API_KEYS.length }, "api ready");

  stopOnSignal(logger, () => server.close());
}

export function registerApiCommand(program: Command): void {
  program
    .command("api")
    .description("serve the HTTP enqueue API (port CLIPGUARD_API_PORT, keys CLIPGUARD_API_KEYS)")
    .action(async () => {
      await runApi();
    });
}
