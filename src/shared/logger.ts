import { pino, type Logger, type LevelWithSilent } from "pino";

export type { Logger };

/**
 * Paths never written to logs: image bytes, API keys, webhook secrets, auth headers.
 * Logged objects should not carry them in the first place; this is the second line.
 */
export const REDACT_PATHS = [
  "image.base64",
  "*.image.base64",
  "data.image.base64",
  "headers.authorization",
  "req.headers.authorization",
  "secret",
  "*.secret",
  "apiKey",
  "*.apiKey",
  "apiKeys",
];

/** The one root logger of a process; modules take child loggers from it. Logs go to stderr. */
export function createLogger(level: LevelWithSilent, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    { level, base: { service: "clipguard", ...bindings }, redact: { paths: REDACT_PATHS, censor: "[redacted]" } },
    pino.destination({ fd: 2, sync: false }),
  );
}
