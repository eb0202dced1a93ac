import { InvalidArgumentError, type Command } from "commander";
import { clientOptionsFromConfig } from "../client/client-config.js";
import type { EnqueueOptions } from "../client/client-options.js";
import { ModerationClient } from "../client/moderation-client.js";
import { loadConfig } from "../shared/config.js";
import { ClipguardError, isClipguardError } from "../shared/errors.js";
import type { JobVerdict } from "../shared/job-schema.js";
import { EXIT, reportFatal } from "./cli-errors.js";

interface EnqueueFlags {
  wait?: boolean;
  timeout?: number;
  imageId?: string;
  policies?: string[];
}

const DEFAULT_TIMEOUT_S = 60;

function parseSeconds(value: string): number {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new InvalidArgumentError("give a positive number of seconds");
  return seconds;
}

function parseList(value: string): string[] {
  const ids = value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (ids.length === 0) throw new InvalidArgumentError("give comma-separated policy ids");
  return ids;
}

function itemError(input: string, err: unknown): void {
  const code = isClipguardError(err) ? err.code : "CLIPGUARD_E_INTERNAL";
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`clipguard: ${input}: ${message.replaceAll("\n", "; ")} [${code}]\n`);
}

/**
 * `clipguard enqueue INPUT...`: one job per file or URL. Prints one job id per input, or with
 * `--wait` one verdict JSON line per input as the verdicts arrive (with `image` set to the input).
 * Exit 0 when all went well, 1 when an input could not be enqueued, a verdict is an error or the
 * wait timed out, 2 when nothing could run (config, usage, Redis unreachable).
 */
async function enqueue(inputs: string[], flags: EnqueueFlags): Promise<number> {
  let client: ModerationClient | undefined;
  try {
    if (flags.imageId !== undefined && inputs.length !== 1) {
      throw new ClipguardError("CLIPGUARD_E_CONFIG", "--image-id names one image; give exactly one input with it");
    }
    if (flags.timeout !== undefined && flags.wait !== true) throw new ClipguardError("CLIPGUARD_E_CONFIG", "--timeout needs --wait");
    client = new ModerationClient(clientOptionsFromConfig(loadConfig()));
    await client.ping();
  } catch (err) {
    await client?.close();
    return reportFatal(err);
  }
  const moderation = client;
  const options: EnqueueOptions = {
    ...(flags.imageId !== undefined ? { imageId: flags.imageId } : {}),
    ...(flags.policies !== undefined ? { policies: flags.policies } : {}),
  };
  let errors = 0;
  try {
    const jobs: { input: string; jobId: string }[] = [];
    for (const input of inputs) {
      let jobId: string;
      try {
        jobId = await moderation.enqueue(input, options);
      } catch (err) {
        // Redis going away mid-run stops everything; a bad input only skips that input
        if (isClipguardError(err) && err.code === "CLIPGUARD_E_REDIS") throw err;
        itemError(input, err);
        errors++;
        continue;
      }
      if (flags.wait === true) jobs.push({ input, jobId });
      else process.stdout.write(`${jobId}\n`);
    }
    if (flags.wait === true) {
      const timeoutMs = (flags.timeout ?? DEFAULT_TIMEOUT_S) * 1000;
      const deadline = Date.now() + timeoutMs;
      await Promise.all(
        jobs.map(async ({ input, jobId }) => {
          const verdict = await moderation.waitForVerdict(jobId, { timeoutMs: Math.max(0, deadline - Date.now()) });
          if (verdict === undefined) {
            errors++;
            const error = { code: "CLIPGUARD_E_WAIT_TIMEOUT", message: `no verdict within ${timeoutMs / 1000} s; the job is still queued or running` };
            process.stdout.write(JSON.stringify({ jobId, image: input, error }) + "\n");
            return;
          }
          if (verdict.decision === "error") errors++;
          const line: JobVerdict = { ...verdict, image: verdict.image ?? input };
          process.stdout.write(JSON.stringify(line) + "\n");
        }),
      );
    }
  } catch (err) {
    await moderation.close();
    return reportFatal(err);
  }
  await moderation.close();
  return errors > 0 ? EXIT.itemErrors : EXIT.ok;
}

export function registerEnqueueCommand(program: Command): void {
  program
    .command("enqueue")
    .description("enqueue images for the workers; prints one job id per input (with --wait, one verdict JSON line per input)")
    .argument("<inputs...>", "image files, or http(s) URLs the worker fetches")
    .option("--wait", "wait for the verdicts and print them as they arrive")
    .option("--timeout <seconds>", `with --wait, give up after this many seconds (default ${DEFAULT_TIMEOUT_S})`, parseSeconds)
    .option("--image-id <id>", "your id for the image, echoed in the verdict (one input only)")
    .option("--policies <ids>", "comma-separated policy ids to judge against (default: all)", parseList)
    .action(async (inputs: string[], flags: EnqueueFlags) => {
      process.exitCode = await enqueue(inputs, flags);
    });
}
