import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Queue, QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import type { JobVerdict } from "../src/shared/job-schema.js";
import { BLUE, colourPolicies, RED, solidPng, tempDir } from "./support/fixtures.js";
import { findExecutable, promtool, startPrometheus, type PromSample, type PrometheusServer } from "./support/prometheus.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { startWorker, type WorkerProcess } from "./support/worker-process.js";

const DASHBOARD_FILE = "deploy/grafana/clipguard.json";
const ALERTS_FILE = "deploy/prometheus/alerts.yaml";
const JOB = "clipguard-worker";
const HEALTHY_NS = "clipguard-test";
const STUCK_NS = "clipguard-stuck";

interface Target {
  refId: string;
  expr: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  title: string;
  type: string;
  datasource?: { type?: string; uid?: string };
  gridPos?: { h: number; w: number; x: number; y: number };
  targets?: Target[];
}
interface Variable {
  name: string;
  type: string;
  query: string;
  datasource?: { type?: string; uid?: string };
}
interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const dashboard = JSON.parse(fs.readFileSync(DASHBOARD_FILE, "utf8")) as { panels: Panel[]; templating: { list: Variable[] } };
const rules = (parse(fs.readFileSync(ALERTS_FILE, "utf8")) as { groups: { name: string; rules: AlertRule[] }[] }).groups.flatMap((g) => g.rules);
const ruleNamed = (name: string): AlertRule => {
  const rule = rules.find((r) => r.alert === name);
  if (rule === undefined) throw new Error(`no alert ${name} in ${ALERTS_FILE}`);
  return rule;
};

/** Grafana's template variables, as the test's Prometheus has them; an unknown one is an error. */
function substitute(expr: string, values: Record<string, string>): string {
  return expr.replace(/\$\{?(\w+)\}?/g, (_match, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`the test does not know the variable $${name} in ${expr}`);
    return value;
  });
}
const PANEL_VARIABLES = { job: JOB, namespace: HEALTHY_NS, __rate_interval: "1m" };

const DS_UID = "${DS_PROMETHEUS}";

describe("Grafana dashboard JSON model", () => {
  const panels = dashboard.panels;

  it("has unique panel ids, a grid position and at least one query per panel", () => {
    expect(panels.length).toBeGreaterThan(0);
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const panel of panels) {
      expect(panel.gridPos, panel.title).toMatchObject({ h: expect.any(Number), w: expect.any(Number), x: expect.any(Number), y: expect.any(Number) });
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      const refIds = panel.targets!.map((t) => t.refId);
      expect(new Set(refIds).size, `${panel.title}: refIds`).toBe(refIds.length);
      for (const target of panel.targets!) expect(target.expr, `${panel.title} ${target.refId}`).toMatch(/\S/);
    }
  });

  it("takes its data source from the DS_PROMETHEUS variable everywhere", () => {
    const dsVariable = dashboard.templating.list.find((v) => v.name === "DS_PROMETHEUS");
    expect(dsVariable).toMatchObject({ type: "datasource", query: "prometheus" });
    const refs = [
      ...panels.flatMap((p) => [p.datasource, ...(p.targets ?? []).map((t) => t.datasource)]),
      ...dashboard.templating.list.filter((v) => v.type === "query").map((v) => v.datasource),
    ];
    for (const ref of refs) expect(ref).toEqual({ type: "prometheus", uid: DS_UID });
    // no data source pinned by uid anywhere: the only uids are the dashboard's own and the variable
    const uids = [...JSON.stringify(dashboard).matchAll(/"uid":"([^"]*)"/g)].map((m) => m[1]);
    expect(new Set(uids)).toEqual(new Set([DS_UID, "clipguard-overview"]));
  });

  it("filters every selector by the job and namespace variables", () => {
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(expect.arrayContaining(["job", "namespace"]));
    for (const target of panels.flatMap((p) => p.targets ?? [])) {
      const selectors = target.expr.match(/[a-z_:]+\{[^}]*\}/g) ?? [];
      expect(selectors.length, target.expr).toBeGreaterThan(0);
      for (const selector of selectors) {
        expect(selector).toContain('job=~"$job"');
        expect(selector).toContain('namespace=~"$namespace"');
      }
    }
  });

  it("charts every metric the issue asks for", () => {
    const exprs = panels.flatMap((p) => p.targets ?? []).map((t) => t.expr).join("\n");
    for (const metric of [
      "clipguard_jobs_completed_total",
      "clipguard_policy_decisions_total",
      "clipguard_stage_duration_seconds_bucket",
      "clipguard_queue_jobs",
      "clipguard_queue_oldest_waiting_seconds",
      "clipguard_inference_batch_size_bucket",
      "clipguard_inference_batch_size_sum",
      "clipguard_text_embedding_cache_total",
      "clipguard_image_embedding_cache_total",
      "clipguard_job_failures_total",
      "up",
      "clipguard_policy_version_info",
    ]) {
      expect(exprs, metric).toMatch(new RegExp(`\\b${metric}\\{`));
    }
  });
});

describe("Prometheus alert rules file", () => {
  it("has one group, clipguard, and every alert has a severity, a summary, a description and a runbook hint", () => {
    const groups = (parse(fs.readFileSync(ALERTS_FILE, "utf8")) as { groups: { name: string }[] }).groups;
    expect(groups.map((g) => g.name)).toEqual(["clipguard"]);
    expect(rules.map((r) => r.alert)).toEqual(
      expect.arrayContaining([
        "ClipguardWorkerDown",
        "ClipguardQueueStalled",
        "ClipguardQueueBacklogOld",
        "ClipguardQueueBacklogGrowing",
        "ClipguardErrorRateHigh",
        "ClipguardPolicyReloadFailed",
      ]),
    );
    for (const rule of rules) {
      expect(["warning", "critical"], rule.alert).toContain(rule.labels?.["severity"]);
      for (const key of ["summary", "description", "runbook"]) expect(rule.annotations?.[key], `${rule.alert} ${key}`).toMatch(/\S/);
    }
  });
});

const prometheusMissing = findExecutable("prometheus") === undefined || findExecutable("promtool") === undefined;
const ci = (process.env["CI"] ?? "") !== "";
if (prometheusMissing && !ci) {
  console.warn("observability: `prometheus`/`promtool` not on PATH, Prometheus tests skipped (apt-get install prometheus); with CI set they fail instead");
}

/**
 * One Prometheus (1 s scrape and rule evaluation) scraping two real workers under job
 * clipguard-worker: "healthy" (namespace clipguard-test) judges a known set of jobs; "stuck"
 * (namespace clipguard-stuck, concurrency 1) hangs on an image URL that never answers, gets a
 * backlog, and is finally killed. The tests run in order and build on each other.
 */
describe.skipIf(prometheusMissing && !ci)("dashboard and alerts against a real Prometheus", () => {
  const healthyNs = testNamespace();
  const stuckNs = testNamespace();
  let redis: Redis;
  let dir: string;
  let policiesFile: string;
  let healthy: WorkerProcess;
  let stuck: WorkerProcess;
  let prometheus: PrometheusServer;
  const queues: Queue[] = [];
  const events: QueueEvents[] = [];
  let hangingServer: http.Server;
  let hangingUrl = "";
  const verdicts: JobVerdict[] = [];

  const expr = (name: string) => ruleNamed(name).expr;
  const labelsOf = (samples: PromSample[], label: string) => samples.map((s) => s.metric[label]).sort();

  async function until<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 20_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value !== undefined) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; prometheus logs: ${prometheus.logs.join("\n")}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  /** Polls an expression until it returns a series matching `where`. */
  const untilSeries = (query: string, where: (s: PromSample) => boolean, what: string) =>
    until(async () => {
      const found = (await prometheus.query(query)).filter(where);
      return found.length > 0 ? found : undefined;
    }, what);
  const inNs = (ns: string) => (s: PromSample) => s.metric["namespace"] === ns;

  /** The worker's own count of verdicts, and a wait until Prometheus has scraped that count. */
  async function untilScraped(): Promise<void> {
    const text = await healthy.metrics();
    const own = text
      .split("\n")
      .filter((l) => l.startsWith("clipguard_jobs_completed_total{"))
      .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
    await until(async () => {
      const [sample] = await prometheus.query(`sum(clipguard_jobs_completed_total{namespace="${HEALTHY_NS}"})`);
      return sample?.value === own ? true : undefined;
    }, `Prometheus to scrape ${own} verdicts`);
  }

  async function runWave(queue: Queue, queueEvents: QueueEvents, jobs: unknown[]): Promise<void> {
    const added = await Promise.all(jobs.map((data) => queue.add("moderate", data, { attempts: 1 })));
    for (const job of added) {
      try {
        verdicts.push((await job.waitUntilFinished(queueEvents, 30_000)) as JobVerdict);
      } catch {
        // error verdicts fail the job; counted through the metrics
      }
    }
    await untilScraped();
  }

  beforeAll(async () => {
    if (prometheusMissing) throw new Error("CI is set but `prometheus`/`promtool` are not on PATH: .ci/run installs the Debian package prometheus");
    const url = await testRedisUrl();
    redis = new Redis(url);
    dir = await tempDir();
    policiesFile = path.join(dir, "policies.yaml");
    await fsp.writeFile(policiesFile, colourPolicies(healthyNs));
    const stuckPolicies = path.join(dir, "stuck-policies.yaml");
    await fsp.writeFile(stuckPolicies, colourPolicies(stuckNs));
    hangingServer = http.createServer(() => {
      // never answers: the stuck worker's only job slot stays busy
    });
    await new Promise<void>((resolve) => hangingServer.listen(0, "127.0.0.1", resolve));
    hangingUrl = `http://127.0.0.1:${(hangingServer.address() as AddressInfo).port}/slow.png`;

    const base = { REDIS_URL: url };
    const started = await Promise.allSettled([
      startWorker({ ...base, CLIPGUARD_QUEUE: healthyNs, CLIPGUARD_VERDICT_STREAM: `${healthyNs}:verdicts`, CLIPGUARD_POLICIES: policiesFile }),
      startWorker({
        ...base,
        CLIPGUARD_QUEUE: stuckNs,
        CLIPGUARD_VERDICT_STREAM: `${stuckNs}:verdicts`,
        CLIPGUARD_POLICIES: stuckPolicies,
        CLIPGUARD_CONCURRENCY: "1",
        CLIPGUARD_ALLOW_PRIVATE_URLS: "true",
        CLIPGUARD_FETCH_TIMEOUT_MS: "120000",
      }),
    ]);
    const failed = started.find((r) => r.status === "rejected");
    if (failed !== undefined) {
      // one did not come up: do not leave the other running
      await Promise.all(started.map((r) => (r.status === "fulfilled" ? r.value.stop("SIGKILL") : undefined)));
      throw failed.reason;
    }
    [healthy, stuck] = started.map((r) => (r as PromiseFulfilledResult<WorkerProcess>).value) as [WorkerProcess, WorkerProcess];
    for (const ns of [healthyNs, stuckNs]) {
      queues.push(new Queue(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) }));
      events.push(new QueueEvents(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) }));
    }
    await Promise.all(events.map((e) => e.waitUntilReady()));
    prometheus = await startPrometheus({
      jobName: JOB,
      targets: [
        { address: `127.0.0.1:${healthy.metricsPort}`, labels: { namespace: HEALTHY_NS } },
        { address: `127.0.0.1:${stuck.metricsPort}`, labels: { namespace: STUCK_NS } },
      ],
      ruleFiles: [ALERTS_FILE],
    });
  });

  afterAll(async () => {
    await prometheus?.stop();
    await Promise.all([healthy?.stop(), stuck?.stop("SIGKILL")]);
    if (hangingServer !== undefined) {
      hangingServer.closeAllConnections();
      await new Promise((resolve) => hangingServer.close(resolve));
    }
    for (const queue of queues) await queue.obliterate({ force: true });
    await Promise.all([...queues.map((q) => q.close()), ...events.map((e) => e.close())]);
    if (redis !== undefined) {
      for (const ns of [healthyNs, stuckNs]) await cleanupNamespace(redis, ns);
      redis.disconnect();
    }
    if (dir !== undefined) await fsp.rm(dir, { recursive: true, force: true });
  });

  it("promtool accepts the rule file", () => {
    const { status, output } = promtool(["check", "rules", ALERTS_FILE]);
    expect(output).toContain(`SUCCESS: ${rules.length} rules found`);
    expect(status).toBe(0);
  });

  it("loads every rule; with both workers healthy and their queues empty, no alert expression returns a series", async () => {
    await until(async () => ((await prometheus.query(`count(up{job="${JOB}"} == 1)`))[0]?.value === 2 ? true : undefined), "both targets up");
    const loaded = await until(async () => {
      const group = (await prometheus.rules()).find((g) => g.name === "clipguard");
      return group !== undefined && group.rules.every((r) => !r.lastEvaluation.startsWith("0001")) ? group.rules : undefined;
    }, "the clipguard rule group to be evaluated");
    expect(loaded.map((r) => r.name).sort()).toEqual(rules.map((r) => r.alert).sort());
    for (const rule of loaded) expect({ name: rule.name, health: rule.health, lastError: rule.lastError ?? "" }).toEqual({ name: rule.name, health: "ok", lastError: "" });
    for (const rule of rules) expect(await prometheus.query(rule.expr), rule.alert).toEqual([]);
    // before the first scrape `absent(up)` holds for a moment and the rule goes pending; it must clear
    await until(async () => ((await prometheus.alerts()).length === 0 ? true : undefined), "no active alerts");
  });

  it("lists the worker's job and both namespaces in the dashboard's variables", async () => {
    const values: Record<string, string[]> = {};
    for (const variable of dashboard.templating.list.filter((v) => v.type === "query")) {
      const match = /^label_values\((.+),\s*(\w+)\)$/.exec(variable.query);
      expect(match, variable.query).not.toBeNull();
      const series = await prometheus.series(substitute(match![1]!, { job: ".*" }));
      values[variable.name] = [...new Set(series.map((s) => s[match![2]!]).filter((v) => v !== undefined))].sort();
    }
    expect(values).toEqual({ job: [JOB], namespace: [STUCK_NS, HEALTHY_NS].sort() });
  });

  it("answers every panel's queries with the expected series after a known set of jobs", async () => {
    const [healthyQueue, healthyEvents] = [queues[0]!, events[0]!];
    // sizes unique to this run so the images' embeddings are not in Redis from earlier runs
    const size = () => 40 + Math.floor(Math.random() * 200);
    const [redA, redB, blueA, blueB] = await Promise.all([solidPng(RED, size(), size()), solidPng(RED, size(), size()), solidPng(BLUE, size(), size()), solidPng(BLUE, size(), size())]);
    for (const png of [redA, redB, blueA, blueB]) {
      const sha = createHash("sha256").update(png).digest("hex");
      const keys = await redis.keys(`clipguard:imgemb:*:${sha}`);
      if (keys.length > 0) await redis.del(...keys);
    }
    const whole = await solidPng(RED, size(), size());
    const corrupt = whole.subarray(0, Math.floor(whole.length * 0.6));
    const b64 = (png: Buffer) => ({ image: { base64: png.toString("base64") } });
    // Three waves with a scrape in between. The worker creates a labelled series at its first
    // event, and rate() cannot see the step from "no series" to the first value, so every series
    // gets events in two scrapes to show a rate above 0.
    await runWave(healthyQueue, healthyEvents, [b64(redA), b64(blueA), b64(corrupt), { imageId: "no image" }]);
    await runWave(healthyQueue, healthyEvents, [b64(redB), b64(redA), b64(blueB), b64(corrupt), { imageId: "no image either" }]);
    await runWave(healthyQueue, healthyEvents, [b64(blueA)]);

    // the known counts, from the counters the panels are built on
    // (zero-valued series are left out, so that label values initialised to 0 do not matter)
    const counts = async (query: string, by: string[]) =>
      Object.fromEntries((await prometheus.query(query)).filter((s) => s.value !== 0).map((s) => [by.map((l) => s.metric[l]).join("/"), s.value]));
    const sel = `job="${JOB}", namespace="${HEALTHY_NS}"`;
    expect(await counts(`sum by (decision) (clipguard_jobs_completed_total{${sel}})`, ["decision"])).toEqual({ block: 3, review: 3, error: 4 });
    expect(await counts(`sum by (policy, decision) (clipguard_policy_decisions_total{${sel}})`, ["policy", "decision"])).toEqual({
      "red/block": 3,
      "red/allow": 3,
      "blue/allow": 3,
      "blue/review": 3,
    });
    expect(await counts(`sum by (code) (clipguard_job_failures_total{${sel}})`, ["code"])).toEqual({ CLIPGUARD_E_IMAGE_DECODE: 2, CLIPGUARD_E_JOB_INVALID: 2 });

    const policyVersions = [...new Set(verdicts.map((v) => v.policyVersion))];
    expect(policyVersions).toHaveLength(1);
    const textHits = (await healthy.metric("clipguard_text_embedding_cache_total", { result: "hit" })) ?? 0;
    const textMisses = (await healthy.metric("clipguard_text_embedding_cache_total", { result: "miss" })) ?? 0;
    expect(textHits + textMisses).toBeGreaterThan(0);

    const finitePositive = (s: PromSample) => Number.isFinite(s.value) && s.value > 0;
    /** The label values of the series with a value above 0, after checking that no value is negative, NaN or infinite. */
    const nonZero = (samples: PromSample[], label: string, max = Infinity) => {
      for (const s of samples) expect(s.value >= 0 && s.value <= max, JSON.stringify(s)).toBe(true);
      return labelsOf(samples.filter((s) => s.value > 0), label);
    };
    type Results = Record<string, PromSample[]>;
    const expectations: Record<string, (r: Results) => void> = {
      "Workers up": (r) => expect(r["A"]).toEqual([{ metric: {}, value: 1 }]),
      "Active policy version": (r) => expect(r["A"]).toEqual([{ metric: { version: policyVersions[0] }, value: 1 }]),
      "Oldest waiting job": (r) => expect(r["A"]).toEqual([{ metric: {}, value: 0 }]),
      "Jobs per second by decision": (r) => {
        expect(nonZero(r["A"]!, "decision")).toEqual(["block", "error", "review"]);
      },
      "Block and review share per policy": (r) => {
        expect(nonZero(r["A"]!, "policy", 1)).toEqual(["red"]);
        expect(nonZero(r["B"]!, "policy", 1)).toEqual(["blue"]);
      },
      "Stage latency p50 / p95 / p99": (r) => {
        for (const refId of ["A", "B", "C"]) {
          expect(labelsOf(r[refId]!, "stage"), refId).toEqual(["decode", "fetch", "inference", "queue", "total"]);
          expect(r[refId]!.every(finitePositive), refId).toBe(true);
        }
        const stage = (refId: string, name: string) => r[refId]!.find((s) => s.metric["stage"] === name)!.value;
        expect(stage("A", "total")).toBeLessThanOrEqual(stage("C", "total"));
      },
      "Queue depth by state": (r) => {
        const byState = Object.fromEntries(r["A"]!.map((s) => [s.metric["state"], s.value]));
        expect(byState).toMatchObject({ waiting: 0, active: 0, delayed: 0, prioritized: 0, failed: 4 });
      },
      "Inference batch size": (r) => {
        for (const refId of ["A", "B"]) {
          expect(r[refId], refId).toHaveLength(1);
          expect(r[refId]![0]!.value, refId).toBeGreaterThan(0);
          expect(r[refId]![0]!.value, refId).toBeLessThanOrEqual(8);
        }
        expect(r["A"]![0]!.value).toBeGreaterThanOrEqual(1);
      },
      "Embedding cache hit rates": (r) => {
        expect(r["A"]).toHaveLength(1);
        expect(r["A"]![0]!.value).toBeGreaterThan(0);
        expect(r["A"]![0]!.value).toBeLessThan(1);
        expect(r["B"]).toHaveLength(1);
        expect(r["B"]![0]!.value).toBeCloseTo(textHits / (textHits + textMisses), 9);
      },
      "Errors by code": (r) => {
        expect(nonZero(r["A"]!, "code")).toEqual(["CLIPGUARD_E_IMAGE_DECODE", "CLIPGUARD_E_JOB_INVALID"]);
      },
    };
    expect(dashboard.panels.map((p) => p.title).sort()).toEqual(Object.keys(expectations).sort());
    for (const panel of dashboard.panels) {
      const results: Results = {};
      for (const target of panel.targets ?? []) results[target.refId] = await prometheus.query(substitute(target.expr, PANEL_VARIABLES));
      try {
        expectations[panel.title]!(results);
      } catch (err) {
        throw new Error(`panel "${panel.title}": ${(err as Error).message}\n${JSON.stringify(results)}`);
      }
    }
  });

  it("fires the error-rate expression for the worker whose verdicts were 40% errors, and no other alert", async () => {
    const errorRate = await prometheus.query(expr("ClipguardErrorRateHigh"));
    expect(errorRate.map((s) => s.metric)).toEqual([{ job: JOB, namespace: HEALTHY_NS }]);
    expect(errorRate[0]!.value).toBeGreaterThan(0.1);
    expect(errorRate[0]!.value).toBeLessThanOrEqual(1);
    for (const rule of rules.filter((r) => r.alert !== "ClipguardErrorRateHigh")) expect(await prometheus.query(rule.expr), rule.alert).toEqual([]);
  });

  it("shows a refused policy reload in the reload alert, and the active version stays", async () => {
    await fsp.writeFile(policiesFile, "version: 1\npolicies:\n  - id: red\n    thresholds: { review: 2 }\n");
    healthy.child.kill("SIGHUP");
    const fired = await untilSeries(expr("ClipguardPolicyReloadFailed"), inNs(HEALTHY_NS), "the reload-failed expression");
    expect(fired.map((s) => s.metric["instance"])).toEqual([`127.0.0.1:${healthy.metricsPort}`]);
    const versions = await prometheus.query(`clipguard_policy_version_info{namespace="${HEALTHY_NS}"}`);
    expect(versions.map((s) => s.metric["version"])).toEqual([verdicts[0]!.policyVersion]);
  });

  it("shows a stuck worker with waiting jobs in the stalled-queue and old-backlog alerts, and a growing backlog", async () => {
    const [stuckQueue] = [queues[1]!];
    await stuckQueue.add("moderate", { image: { url: hangingUrl } });
    await until(async () => ((await stuckQueue.getJobCounts("active"))["active"] === 1 ? true : undefined), "the stuck worker to take the hanging job");
    // a job enqueued 20 minutes ago (BullMQ takes the enqueue time from the job options)
    await stuckQueue.add("moderate", { imageId: "waits" }, { timestamp: Date.now() - 20 * 60_000 });

    const stalled = await untilSeries(expr("ClipguardQueueStalled"), () => true, "the stalled-queue expression");
    expect(stalled.map((s) => s.metric)).toEqual([{ job: JOB, namespace: STUCK_NS }]);
    const old = await untilSeries(expr("ClipguardQueueBacklogOld"), () => true, "the old-backlog expression");
    expect(old.map((s) => s.metric)).toEqual([{ job: JOB, namespace: STUCK_NS }]);
    expect(old[0]!.value).toBeGreaterThan(19 * 60);
    expect(await prometheus.query(expr("ClipguardQueueBacklogGrowing"))).toEqual([]);

    await stuckQueue.addBulk(Array.from({ length: 150 }, (_, i) => ({ name: "moderate", data: { imageId: `backlog-${i}` } })));
    const growing = await untilSeries(expr("ClipguardQueueBacklogGrowing"), () => true, "the growing-backlog expression");
    expect(growing.map((s) => s.metric)).toEqual([{ job: JOB, namespace: STUCK_NS }]);
    expect(growing[0]!.value).toBeGreaterThan(100);

    // the rules (with their `for:` durations) hold these as pending, with their severity
    const pending = await until(async () => {
      const alerts = (await prometheus.alerts()).filter((a) => a.labels["namespace"] === STUCK_NS);
      return alerts.length >= 2 ? alerts : undefined;
    }, "pending alerts for the stuck worker");
    expect(pending.map((a) => [a.labels["alertname"], a.labels["severity"], a.state]).sort()).toEqual(
      expect.arrayContaining([
        ["ClipguardQueueBacklogOld", "warning", "pending"],
        ["ClipguardQueueStalled", "critical", "pending"],
      ]),
    );
  });

  it("shows a killed worker in the worker-down alert, for that worker only", async () => {
    await stuck.stop("SIGKILL");
    const down = await untilSeries(expr("ClipguardWorkerDown"), () => true, "the worker-down expression");
    expect(down.map((s) => s.metric)).toEqual([{ __name__: "up", job: JOB, namespace: STUCK_NS, instance: `127.0.0.1:${stuck.metricsPort}` }]);
    const alert = await until(async () => (await prometheus.alerts()).find((a) => a.labels["alertname"] === "ClipguardWorkerDown"), "the pending worker-down alert");
    expect(alert).toMatchObject({ state: "pending", labels: { severity: "critical", namespace: STUCK_NS } });
    expect(alert.annotations["summary"]).toBe(`clipguard worker 127.0.0.1:${stuck.metricsPort} is down`);
    // the `absent` branch: a job with no target at all
    const absent = await prometheus.query(expr("ClipguardWorkerDown").replaceAll(`job="${JOB}"`, 'job="clipguard-nowhere"'));
    expect(absent).toEqual([{ metric: { job: "clipguard-nowhere" }, value: 1 }]);
  });
});
