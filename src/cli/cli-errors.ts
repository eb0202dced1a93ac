import { isClipguardError } from "../shared/errors.js";

/** Exit statuses shared by every command. */
export const EXIT = { ok: 0, itemErrors: 1, usage: 2 } as const;

/**
 * The one line a person sees when a command cannot run at all (usage, config, model, policies):
 * the code and the message, no stack trace. Unexpected errors keep their stack for bug reports
 * only when CLIPGUARD_DEBUG is set.
 */
export function reportFatal(err: unknown): number {
  if (isClipguardError(err)) {
    process.stderr.write(`clipguard: ${err.message.replaceAll("\n", "; ")} [${err.code}]\n`);
  } else {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`clipguard: unexpected error: ${message.replaceAll("\n", "; ")}\n`);
  }
  return EXIT.usage;
}
