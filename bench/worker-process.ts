/**
 * A real `clipguard worker` process (from dist/) for the service phase, and reading its /metrics.
 * Unlike test/support/worker-process.ts it waits minutes rather than seconds for readiness (a
 * ViT-B/32 model loads in tens of seconds on 2 cores) and keeps only the last log lines, not
 * thousands of parsed per-job entries.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { REPOSITORY_ROOT } from "../tools/bench-model/bench-model-files.js";

export const CLI = path.join(REPOSITORY_ROOT, "dist", "src", "cli", "main.js");
const READY_TIMEOUT_MS = 300_000;
const KEPT_LOG_LINES = 40;

export interface BenchWorker {
  child: ChildProcess;
  /** The whole /metrics text (note: each scrape resets prom-client's event-loop histogram). */
  metricsText(): Promise<string>;
  /** The value of a label-less sample, e.g. clipguard_process_resident_memory_bytes. */
  metric(name: string): Promise<number>;
  stop(): Promise<void>;
}

/** The value of the sample `name` whose labels include `labels`, from Prometheus text. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)/.exec(line);
    if (match === null || match[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (match[2] ?? "").includes(`${k}="${v}"`))) return Number(match[3]);
  }
  return undefined;
}

/** Starts the worker with `env` added to this process's environment; resolves once it is ready. */
export async function startBenchWorker(env: Record<string, string>): Promise<BenchWorker> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first (the service phase runs the built worker)`);
  // BENCH_WORKER_NODE_ARGS: Node flags for the worker only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
  // (NODE_OPTIONS refuses --cpu-prof)
  const nodeArgs = (process.env["BENCH_WORKER_NODE_ARGS"] ?? "").split(" ").filter((arg) => arg !== "");
  const child = spawn(process.execPath, [...nodeArgs, CLI, "worker"], {
    env: { ...process.env, CLIPGUARD_METRICS_PORT: "0", CLIPGUARD_METRICS_HOST: "127.0.0.1", CLIPGUARD_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const recent: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const port = await new Promise<number>((resolve, reject) => {
    let ready = false;
    const timer = setTimeout(() => reject(new Error(`the worker was not ready within ${READY_TIMEOUT_MS} ms:\n${recent.join("\n")}`)), READY_TIMEOUT_MS);
    // the pipe must be drained for the whole run: a full pipe would block the worker's logging
    readline.createInterface({ input: child.stderr! }).on("line", (line) => {
      recent.push(line);
      if (recent.length > KEPT_LOG_LINES) recent.shift();
      if (ready || !line.includes('"worker ready"')) return;
      const entry = JSON.parse(line) as { metricsPort?: number };
      ready = true;
      clearTimeout(timer);
      resolve(entry.metricsPort ?? 0);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      if (!ready) reject(new Error(`the worker exited with ${code} before it was ready:\n${recent.join("\n")}`));
    });
  });
  const metricsText = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return {
    child,
    metricsText,
    async metric(name) {
      const text = await metricsText();
      const value = sample(text, name);
      if (value === undefined) throw new Error(`the worker's /metrics has no ${name}`);
      return value;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const code = await exited;
      if (code !== 0) throw new Error(`the worker exited with ${code}:\n${recent.join("\n")}`);
    },
  };
}
