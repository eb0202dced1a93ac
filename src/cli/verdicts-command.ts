import type { Command } from "commander";
import { clientOptionsFromConfig } from "../client/client-config.js";
import { ModerationClient } from "../client/moderation-client.js";
import { STREAM_ID } from "../client/verdict-stream.js";
import { loadConfig } from "../shared/config.js";
import { ClipguardError } from "../shared/errors.js";
import { EXIT, reportFatal } from "./cli-errors.js";

interface VerdictsFlags {
  follow?: boolean;
  from: string;
}

const PAGE = 500;

/**
 * `clipguard verdicts`: the verdict stream as a downstream consumer sees it, one JSON line per
 * entry: `{"id", "jobId", "decision", "verdict"}` (`id` is the stream entry id, for `--from`).
 * Prints the entries after `--from` and exits 0; with `--follow` keeps printing new ones (XREAD
 * BLOCK) until SIGINT/SIGTERM, then exits 0. Error verdicts are data here and do not change the
 * exit status. Exit 2 when Redis is unreachable or `--from` is not a stream id.
 */
async function printVerdicts(flags: VerdictsFlags): Promise<number> {
  let connecting: ModerationClient | undefined;
  try {
    if (!STREAM_ID.test(flags.from)) {
      throw new ClipguardError("CLIPGUARD_E_CONFIG", `--from "${flags.from}" is not a stream id (<ms>-<seq>, <ms>, 0, or $ for new entries only)`);
    }
    connecting = new ModerationClient(clientOptionsFromConfig(loadConfig()));
    await connecting.ping();
  } catch (err) {
    await connecting?.close();
    return reportFatal(err);
  }
  const client = connecting;
  let stopping = false;
  const stop = () => {
    stopping = true;
    void client.close();
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  // a closed pipe (`| head`) is the reader saying it has seen enough
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") stop();
  });

  let from = flags.from;
  try {
    // pin "$" to an entry id, or each blocking read would skip what arrived between two reads
    if (from === "$") from = await client.latestVerdictId();
    for (;;) {
      const follow = flags.follow === true;
      const entries = await client.readVerdicts(from, follow ? { count: PAGE, blockMs: 5_000 } : { count: PAGE });
      for (const entry of entries) {
        process.stdout.write(JSON.stringify(entry) + "\n");
        from = entry.id;
      }
      if (stopping || (!follow && entries.length === 0)) break;
    }
  } catch (err) {
    if (!stopping) {
      await client.close();
      return reportFatal(err);
    }
  }
  await client.close();
  return EXIT.ok;
}

export function registerVerdictsCommand(program: Command): void {
  program
    .command("verdicts")
    .description("print verdicts from the verdict stream (CLIPGUARD_VERDICT_STREAM), one JSON line per entry")
    .option("--follow", "keep waiting for new verdicts (until Ctrl-C)")
    .option("--from <id>", "print entries after this stream id; 0 for all, $ for new ones only", "0")
    .action(async (flags: VerdictsFlags) => {
      process.exitCode = await printVerdicts(flags);
    });
}
