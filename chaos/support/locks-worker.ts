/**
 * A real `clipguard worker` process (dist/) for the lock-health and shutdown scenarios: waits
 * minutes rather than seconds for readiness (the ViT-B/32 benchmark model loads in seconds on an
 * idle machine, far longer on a loaded one), keeps its parsed log lines, samples its RSS, and
 * times how long it takes to exit after a signal.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import readline from "node:readline";

export const CLI = path.resolve("dist/src/cli/main.js");
const READY_TIMEOUT_MS = 300_000;
const RSS_SAMPLE_MS = 1000;

export interface StopResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** From sending the signal to the process's exit. */
  ms: number;
}

export interface ChaosWorker {
  name: string;
  child: ChildProcess;
  metricsPort: number;
  /** Every log line (pino JSON, parsed), with the time the test received it. */
  logs: (Record<string, unknown> & { receivedAt: number })[];
  /** The value of one sample, e.g. metric("clipguard_jobs_completed_total", {decision: "allow"}). */
  metric(name: string, labels?: Record<string, string>): Promise<number | undefined>;
  /** Sum of every sample of a metric (over all label sets). */
  metricSum(name: string): Promise<number>;
  /** Highest RSS seen so far (sampled every second from /metrics), MiB. */
  peakRssMiB(): number;
  /** Sends `signal` and resolves when the process has exited; SIGKILL after `killAfterMs` when given. */
  stop(signal?: NodeJS.Signals, killAfterMs?: number): Promise<StopResult>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A metric sample's value from Prometheus text, or undefined. */
export function sampleValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)/.exec(line);
    if (match === null || match[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (match[2] ?? "").includes(`${k}="${v}"`))) return Number(match[3]);
  }
  return undefined;
}

/** Starts `clipguard worker` with `env` over this process's environment; resolves once it is ready. */
export async function startChaosWorker(name: string, env: Record<string, string>): Promise<ChaosWorker> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: the chaos suite runs the built worker (npm run build)`);
  const child = spawn(process.execPath, [CLI, "worker"], {
    env: { ...process.env, CLIPGUARD_METRICS_PORT: "0", CLIPGUARD_METRICS_HOST: "127.0.0.1", CLIPGUARD_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const logs: ChaosWorker["logs"] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  // the pipe is drained for the whole run: a full pipe would block the worker's logging
  readline.createInterface({ input: child.stderr! }).on("line", (line) => {
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      entry = { raw: line };
    }
    logs.push({ ...entry, receivedAt: Date.now() });
  });
  const metricsPort = await new Promise<number>((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      const ready = logs.find((l) => l["msg"] === "worker ready");
      if (ready !== undefined) {
        clearInterval(poll);
        resolve(ready["metricsPort"] as number);
      } else if (Date.now() - started > READY_TIMEOUT_MS) {
        clearInterval(poll);
        child.kill("SIGKILL");
        reject(new Error(`worker ${name} was not ready within ${READY_TIMEOUT_MS} ms: ${JSON.stringify(logs.slice(-5))}`));
      }
    }, 50);
    void exited.then(({ code, signal }) => {
      clearInterval(poll);
      reject(new Error(`worker ${name} exited (${code ?? signal}) before it was ready: ${JSON.stringify(logs.slice(-5))}`));
    });
  });
  const metricsText = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  let peakRss = 0;
  const sampler = setInterval(() => {
    metricsText()
      .then((text) => (peakRss = Math.max(peakRss, sampleValue(text, "clipguard_process_resident_memory_bytes") ?? 0)))
      .catch(() => undefined);
  }, RSS_SAMPLE_MS);
  void exited.then(() => clearInterval(sampler));
  return {
    name,
    child,
    metricsPort,
    logs,
    exited,
    async metric(metricName, labels = {}) {
      return sampleValue(await metricsText(), metricName, labels);
    },
    async metricSum(metricName) {
      let sum = 0;
      for (const line of (await metricsText()).split("\n")) {
        const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)/.exec(line);
        if (match?.[1] === metricName) sum += Number(match[3]);
      }
      return sum;
    },
    peakRssMiB: () => peakRss / 2 ** 20,
    async stop(signal = "SIGTERM", killAfterMs) {
      const sent = Date.now();
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const killer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill("SIGKILL"), killAfterMs);
      const { code, signal: exitSignal } = await exited;
      clearTimeout(killer);
      return { code, signal: exitSignal, ms: Date.now() - sent };
    },
  };
}

const LOCK_TROUBLE = /could not renew lock|missing lock|lock mismatch|lock.{0,20}(lost|expired)/i;

/** Log lines that report a lost or unrenewable job lock (BullMQ's worker 'error' events and failed moves). */
export function lockTroubleLines(worker: ChaosWorker): Record<string, unknown>[] {
  return worker.logs.filter((line) => LOCK_TROUBLE.test(JSON.stringify(line)));
}
