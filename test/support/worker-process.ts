import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import readline from "node:readline";

export const CLI = path.resolve("dist/src/cli/main.js");

export interface WorkerProcess {
  child: ChildProcess;
  metricsPort: number;
  /** Every log line the worker wrote (pino JSON, parsed). */
  logs: Record<string, unknown>[];
  metrics(): Promise<string>;
  /** The value of one sample, e.g. metric("clipguard_jobs_completed_total", {decision: "allow"}). */
  metric(name: string, labels?: Record<string, string>): Promise<number | undefined>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `clipguard worker` as a real process and waits until it logs "worker ready". */
export async function startWorker(env: Record<string, string>, args: string[] = []): Promise<WorkerProcess> {
  const child = spawn(process.execPath, [CLI, "worker", ...args], {
    env: { ...process.env, CLIPGUARD_METRICS_PORT: "0", CLIPGUARD_METRICS_HOST: "127.0.0.1", CLIPGUARD_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, unknown>[] = [];
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const metricsPort = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`worker did not become ready; logs: ${JSON.stringify(logs)}`));
    }, 30_000);
    readline.createInterface({ input: child.stderr! }).on("line", (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        entry = { raw: line };
      }
      logs.push(entry);
      if (entry["msg"] === "worker ready") {
        clearTimeout(timer);
        resolve(entry["metricsPort"] as number);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`worker exited with ${code} before it was ready: ${JSON.stringify(logs)}`));
    });
  });
  const metrics = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  return {
    child,
    metricsPort,
    logs,
    metrics,
    async metric(name, labels = {}) {
      const text = await metrics();
      for (const line of text.split("\n")) {
        if (!line.startsWith(name)) continue;
        const match = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
        if (match === null || match[1] !== name) continue;
        const labelText = match[2] ?? "";
        if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) return Number(match[3]);
      }
      return undefined;
    },
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null) return child.exitCode;
      child.kill(signal);
      return exited;
    },
  };
}
