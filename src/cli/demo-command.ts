import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { Command } from "commander";
import { Redis } from "ioredis";
import { ModerationClient } from "../client/moderation-client.js";
import { loadConfig, type Config } from "../shared/config.js";
import { ClipguardError } from "../shared/errors.js";
import type { JobVerdict } from "../shared/job-schema.js";
import { createLogger } from "../shared/logger.js";
import { bundledPath } from "../shared/package-paths.js";
import { startModerationWorker } from "../worker/moderation-worker.js";
import { EXIT, reportFatal } from "./cli-errors.js";

const HOW_TO_GET_REDIS = [
  "clipguard demo needs Redis (>= 6.2). Nothing answers at REDIS_URL, and there is no redis-server on the PATH to start one.",
  "Get one of these, then run `npm run demo` again:",
  "  - Debian/Ubuntu: sudo apt-get install redis-server",
  "  - macOS:         brew install redis",
  "  - Docker:        docker run -d -p 6379:6379 redis:7",
  "  - or point REDIS_URL at a Redis you have: REDIS_URL=redis://host:6379 npm run demo",
].join("\n");

async function redisAnswers(url: string): Promise<boolean> {
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1500 });
  probe.on("error", () => undefined);
  try {
    await probe.connect();
    return (await probe.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A redis-server that lives as long as the demo: no persistence, loopback only. */
async function startThrowawayRedis(): Promise<{ url: string; child: ChildProcess } | undefined> {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  const missing = await new Promise<boolean>((resolve) => {
    child.once("error", () => resolve(true));
    child.once("spawn", () => resolve(false));
  });
  if (missing) return undefined;
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 50; i++) {
    if (await redisAnswers(url)) return { url, child };
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill("SIGKILL");
  throw new ClipguardError("CLIPGUARD_E_REDIS", "started redis-server for the demo, but it did not answer within 5 s");
}

function row(verdict: JobVerdict): string {
  const name = verdict.imageId ?? verdict.jobId;
  const flagged = verdict.policies.filter((p) => p.decision !== "allow").map((p) => `${p.id} ${p.score.toFixed(2)} (${p.decision})`);
  const detail = verdict.decision === "error" ? `${verdict.error?.code ?? ""}` : flagged.join(", ") || "-";
  return `${name.padEnd(20)} ${verdict.decision.padEnd(7)} ${detail}`;
}

/**
 * `clipguard demo [--json]`: the whole service on one machine — a worker on the bundled demo model
 * and example policies, the example images enqueued through the client, each verdict printed as
 * it arrives. Uses REDIS_URL when something answers there, else a throwaway redis-server.
 */
async function runDemo(flags: { json?: boolean }): Promise<number> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    return reportFatal(err);
  }
  let redis: { url: string; child?: ChildProcess } = { url: config.REDIS_URL };
  if (!(await redisAnswers(config.REDIS_URL))) {
    let started: Awaited<ReturnType<typeof startThrowawayRedis>>;
    try {
      started = await startThrowawayRedis();
    } catch (err) {
      return reportFatal(err);
    }
    if (started === undefined) {
      process.stderr.write(HOW_TO_GET_REDIS + "\n");
      return EXIT.usage;
    }
    process.stderr.write(`demo: nothing answers at ${config.REDIS_URL}; started a throwaway redis-server at ${started.url}\n`);
    redis = started;
  }
  const ns = `clipguard-demo-${randomUUID().slice(0, 8)}`;
  const demoConfig: Config = Object.freeze({
    ...config,
    REDIS_URL: redis.url,
    CLIPGUARD_QUEUE: ns,
    CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`,
    CLIPGUARD_METRICS_PORT: 0,
    CLIPGUARD_METRICS_HOST: "127.0.0.1",
    CLIPGUARD_WATCH_POLICIES: false,
  });
  const logger = createLogger(flags.json === true ? "silent" : "warn");
  const imagesDir = bundledPath("examples", "images");
  const images = (await fs.readdir(imagesDir)).sort().map((f) => path.join(imagesDir, f));
  let worker: Awaited<ReturnType<typeof startModerationWorker>> | undefined;
  const client = new ModerationClient({ redis: redis.url, queue: ns, verdictStream: `${ns}:verdicts` });
  let errors = 0;
  try {
    worker = await startModerationWorker(
      demoConfig,
      { modelDir: bundledPath("models", "demo"), variant: "fp32", policiesFile: bundledPath("examples", "policies.yaml") },
      logger,
    );
    if (flags.json !== true) {
      process.stdout.write(`clipguard demo: ${images.length} example images, demo model, examples/policies.yaml\n\n`);
      process.stdout.write(`${"image".padEnd(20)} ${"verdict".padEnd(7)} flagged policies\n`);
    }
    await Promise.all(
      images.map(async (file) => {
        const verdict = await client.enqueueAndWait(file, { imageId: path.basename(file) }, { timeoutMs: 60_000 });
        if (verdict.decision === "error") errors++;
        process.stdout.write((flags.json === true ? JSON.stringify(verdict) : row(verdict)) + "\n");
      }),
    );
    if (flags.json !== true) {
      process.stdout.write("\nThe demo model only knows colours and brightness; see README.md for real CLIP models.\n");
    }
  } catch (err) {
    errors = -1;
    reportFatal(err);
  } finally {
    await worker?.shutdown();
    const cleanup = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    cleanup.on("error", () => undefined);
    const keys = await cleanup.keys(`*${ns}*`).catch(() => []);
    if (keys.length > 0) await cleanup.del(...keys).catch(() => undefined);
    cleanup.disconnect();
    await client.close();
    redis.child?.kill("SIGTERM");
  }
  if (errors < 0) return EXIT.usage;
  return errors > 0 ? EXIT.itemErrors : EXIT.ok;
}

export function registerDemoCommand(program: Command): void {
  program
    .command("demo")
    .description("run a worker on the demo model and moderate the bundled example images end to end")
    .option("--json", "print each verdict as JSON instead of a table")
    .action(async (flags: { json?: boolean }) => {
      process.exitCode = await runDemo(flags);
    });
}
