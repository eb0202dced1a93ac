import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { stringify } from "yaml";
import { tempDir } from "./fixtures.js";

/** One element of an instant vector (or a scalar, with no labels). */
export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

/** An alert as /api/v1/alerts lists it. */
export interface PromAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: "pending" | "firing" | "inactive";
  value: string;
}

/** A rule as /api/v1/rules lists it (the fields the tests look at). */
export interface PromRule {
  name: string;
  query: string;
  health: string;
  lastError?: string;
  lastEvaluation: string;
  type: "alerting" | "recording";
}

export interface ScrapeTarget {
  /** host:port */
  address: string;
  /** Target labels, e.g. `{ namespace: "clipguard-test" }`. */
  labels?: Record<string, string>;
}

export interface PrometheusServer {
  url: string;
  /** Prometheus's own log lines (stderr), for failure messages. */
  logs: string[];
  /** An instant query through /api/v1/query; throws with Prometheus's message when the query is invalid. */
  query(expr: string): Promise<PromSample[]>;
  /** Label sets of the series matching a selector (/api/v1/series), as Grafana's `label_values` reads them. */
  series(match: string): Promise<Record<string, string>[]>;
  alerts(): Promise<PromAlert[]>;
  rules(): Promise<{ name: string; rules: PromRule[] }[]>;
  stop(): Promise<void>;
}

/** The absolute path of an executable on PATH, or undefined. */
export function findExecutable(name: string): string | undefined {
  for (const dir of (process.env["PATH"] ?? "").split(path.delimiter)) {
    if (dir === "") continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Runs promtool synchronously (it is quick) and returns its exit status and output. */
export function promtool(args: string[]): { status: number | null; output: string } {
  const result = spawnSync("promtool", args, { encoding: "utf8", timeout: 30_000 });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** A port that was free a moment ago (Prometheus takes an address, not port 0). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function api<T>(url: string): Promise<T> {
  const response = await fetch(url);
  const body = (await response.json()) as { status: string; data: T; error?: string; errorType?: string };
  if (body.status !== "success") throw new Error(`Prometheus: ${body.errorType ?? ""} ${body.error ?? response.statusText} (${url})`);
  return body.data;
}

/**
 * Starts the `prometheus` binary on a free 127.0.0.1 port with its own data directory, scraping
 * `targets` under one job every `intervalSeconds` and evaluating `ruleFiles` at the same interval.
 * Resolves once /-/ready answers 200.
 */
export async function startPrometheus(options: {
  jobName: string;
  targets: ScrapeTarget[];
  ruleFiles: string[];
  intervalSeconds?: number;
}): Promise<PrometheusServer> {
  const interval = `${options.intervalSeconds ?? 1}s`;
  const dir = await tempDir("clipguard-prometheus-");
  const configFile = path.join(dir, "prometheus.yml");
  await fsp.writeFile(
    configFile,
    stringify({
      global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
      rule_files: options.ruleFiles.map((f) => path.resolve(f)),
      scrape_configs: [
        {
          job_name: options.jobName,
          static_configs: options.targets.map((t) => ({ targets: [t.address], labels: t.labels ?? {} })),
        },
      ],
    }),
  );
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    "prometheus",
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const logs: string[] = [];
  child.stderr!.on("data", (chunk: Buffer) => logs.push(...chunk.toString().split("\n").filter((l) => l !== "")));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}: ${logs.join("\n")}`);
    try {
      if ((await fetch(`${url}/-/ready`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`prometheus did not become ready: ${logs.join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    url,
    logs,
    async query(expr) {
      const data = await api<{ resultType: string; result: unknown }>(`${url}/api/v1/query?query=${encodeURIComponent(expr)}`);
      if (data.resultType === "scalar") {
        const [, value] = data.result as [number, string];
        return [{ metric: {}, value: Number(value) }];
      }
      if (data.resultType !== "vector") throw new Error(`expected a vector from ${expr}, got ${data.resultType}`);
      return (data.result as { metric: Record<string, string>; value: [number, string] }[]).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    series(match) {
      return api<Record<string, string>[]>(`${url}/api/v1/series?match[]=${encodeURIComponent(match)}`);
    },
    async alerts() {
      return (await api<{ alerts: PromAlert[] }>(`${url}/api/v1/alerts`)).alerts;
    },
    async rules() {
      return (await api<{ groups: { name: string; rules: PromRule[] }[] }>(`${url}/api/v1/rules`)).groups;
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
        await exited;
        clearTimeout(timer);
      }
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}
