import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { JobVerdict } from "../src/shared/job-schema.js";
import { colourPolicies, RED, solidPng, tempDir } from "./support/fixtures.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { startWorker, type WorkerProcess } from "./support/worker-process.js";

const SECRET = "whsec_" + Buffer.from("clipguard-reliability-secret-42").toString("base64");

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs = 20_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("worker reliability", () => {
  let ns: string;
  let url: string;
  let redis: Redis;
  let queue: Queue;
  let policies: string;
  const workers: WorkerProcess[] = [];
  const servers: http.Server[] = [];

  const env = (extra: Record<string, string> = {}) => ({
    REDIS_URL: url,
    CLIPGUARD_QUEUE: ns,
    CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`,
    CLIPGUARD_POLICIES: policies,
    CLIPGUARD_ALLOW_PRIVATE_URLS: "true",
    CLIPGUARD_WEBHOOK_SECRET: SECRET,
    CLIPGUARD_LOCK_DURATION_MS: "2000",
    CLIPGUARD_STALLED_INTERVAL_MS: "1000",
    ...extra,
  });
  const spawnWorker = async (extra: Record<string, string> = {}) => {
    const w = await startWorker(env(extra));
    workers.push(w);
    return w;
  };
  const serve = async (handler: http.RequestListener): Promise<string> => {
    const server = http.createServer(handler);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };
  const streamEntries = async (jobId: string) =>
    (await redis.xrange(`${ns}:verdicts`, "-", "+")).filter(([, f]) => f[1] === jobId).map(([, f]) => JSON.parse(f[5]!) as JobVerdict);

  beforeEach(async () => {
    ns = testNamespace();
    url = await testRedisUrl();
    redis = new Redis(url);
    queue = new Queue(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
    policies = path.join(await tempDir(), "policies.yaml");
    await fs.writeFile(policies, colourPolicies(ns));
  });

  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop("SIGKILL")));
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    await cleanupNamespace(redis, ns);
    redis.disconnect();
  });

  it("shares text embeddings through Redis: a second worker never runs the text encoder", async () => {
    const first = await spawnWorker();
    expect(await first.metric("clipguard_text_encoder_runs_total")).toBeGreaterThanOrEqual(1);
    expect(await first.metric("clipguard_text_embedding_cache_total", { result: "miss" })).toBe(3);
    const second = await spawnWorker();
    expect(await second.metric("clipguard_text_encoder_runs_total")).toBe(0);
    expect(await second.metric("clipguard_text_embedding_cache_total", { result: "hit" })).toBe(3);
  });

  it("hot-reloads a good policies file, keeps the running set on a broken one, and reloads on SIGHUP", async () => {
    const w = await spawnWorker();
    const png = (await solidPng(RED)).toString("base64");
    const judge = async () => {
      const job = await queue.add("moderate", { image: { base64: png } });
      return until(async () => (await streamEntries(job.id!))[0], 20_000, "verdict");
    };
    const before = await judge();
    expect(before.decision).toBe("block");

    await fs.writeFile(policies, colourPolicies(ns, 0.5, 0.9999));
    await until(async () => ((await w.metric("clipguard_policy_reloads_total", { result: "ok" })) ?? 0) >= 1 || undefined, 10_000, "reload");
    const after = await judge();
    expect(after.policyVersion).not.toBe(before.policyVersion);
    expect(after.decision).toBe("review");
    expect(await w.metric("clipguard_policy_version_info", { version: after.policyVersion })).toBe(1);

    await fs.writeFile(policies, "version: 1\npolicies:\n  - id: red\n    prompts: []\n");
    await until(async () => ((await w.metric("clipguard_policy_reloads_total", { result: "failed" })) ?? 0) >= 1 || undefined, 10_000, "failed reload");
    const failedLog = w.logs.find((l) => l["msg"] === "policies reload failed; keeping the running set");
    expect(JSON.stringify(failedLog)).toMatch(/policies\.yaml:4:\d+/);
    expect((await judge()).policyVersion).toBe(after.policyVersion);

    await fs.writeFile(policies, colourPolicies(ns));
    w.child.kill("SIGHUP");
    await until(async () => ((await w.metric("clipguard_policy_reloads_total", { result: "ok" })) ?? 0) >= 2 || undefined, 10_000, "SIGHUP reload");
    expect((await judge()).policyVersion).toBe(before.policyVersion);
  });

  it("publishes exactly one stream entry when the job is retried, and re-sends the webhook with the same id", async () => {
    const hooks: string[] = [];
    const base = await serve((req, res) => {
      req.resume();
      hooks.push(String(req.headers["webhook-id"]));
      res.writeHead(hooks.length < 3 ? 500 : 204).end();
    });
    await spawnWorker({ CLIPGUARD_WEBHOOK_ATTEMPTS: "1" });
    const png = (await solidPng(RED)).toString("base64");
    const job = await queue.add("moderate", { image: { base64: png }, callbackUrl: `${base}/hook` }, { attempts: 5, backoff: { type: "fixed", delay: 50 } });
    await until(async () => ((await queue.getJob(job.id!))?.finishedOn !== undefined ? true : undefined), 20_000, "job completion");
    const fresh = await queue.getJob(job.id!);
    expect(await fresh!.getState()).toBe("completed");
    expect(fresh!.attemptsMade).toBe(3);
    expect(await streamEntries(job.id!)).toHaveLength(1);
    expect(hooks).toEqual([job.id, job.id, job.id]);
  });

  it("re-runs a job whose worker was killed mid-job, and the stream still has one entry", async () => {
    let requests = 0;
    const png = await solidPng(RED);
    let onFirstRequest: () => void = () => undefined;
    const firstRequest = new Promise<void>((resolve) => (onFirstRequest = resolve));
    const base = await serve((_req, res) => {
      requests++;
      if (requests === 1) {
        onFirstRequest();
        return; // never answer the first attempt: its worker is about to be killed
      }
      res.writeHead(200, { "content-type": "image/png" }).end(png);
    });
    const doomed = await spawnWorker({ CLIPGUARD_FETCH_TIMEOUT_MS: "60000" });
    const job = await queue.add("moderate", { image: { url: `${base}/slow.png` } }, { attempts: 3 });
    await firstRequest;
    await doomed.stop("SIGKILL");
    await spawnWorker();
    const entries = await until(async () => {
      const found = await streamEntries(job.id!);
      return found.length > 0 ? found : undefined;
    }, 30_000, "verdict after the crash");
    expect(entries).toHaveLength(1);
    expect(entries[0]!.decision).toBe("block");
    await new Promise((r) => setTimeout(r, 1500));
    expect(await streamEntries(job.id!)).toHaveLength(1);
    expect(requests).toBe(2);
  });

  it("finishes in-flight jobs on SIGTERM and exits 0", async () => {
    const png = await solidPng(RED);
    let release: () => void = () => undefined;
    const inFlight = new Promise<void>((resolve) => (release = resolve));
    const base = await serve((_req, res) => {
      release();
      setTimeout(() => res.writeHead(200, { "content-type": "image/png" }).end(png), 800);
    });
    const w = await spawnWorker();
    const job = await queue.add("moderate", { image: { url: `${base}/x.png` } });
    await inFlight;
    expect(await w.stop("SIGTERM")).toBe(0);
    const fresh = await queue.getJob(job.id!);
    expect(await fresh!.getState()).toBe("completed");
    expect(await streamEntries(job.id!)).toHaveLength(1);
  });
});
