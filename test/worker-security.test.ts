import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { Queue, QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobVerdict } from "../src/shared/job-schema.js";
import { colourPolicies, tempDir } from "./support/fixtures.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { startWorker, type WorkerProcess } from "./support/worker-process.js";

describe("worker: URL refusals (no private addresses allowed)", () => {
  const ns = testNamespace();
  let redis: Redis;
  let queue: Queue;
  let events: QueueEvents;
  let worker: WorkerProcess;
  let canary: http.Server;
  let redirector: http.Server;
  let canaryPort = 0;
  let redirectorPort = 0;
  let canaryConnections = 0;

  beforeAll(async () => {
    const url = await testRedisUrl();
    redis = new Redis(url);
    const policies = path.join(await tempDir(), "policies.yaml");
    await fs.writeFile(policies, colourPolicies(ns));
    canary = http.createServer((_req, res) => res.writeHead(200).end("canary"));
    canary.on("connection", () => canaryConnections++);
    await new Promise<void>((resolve) => canary.listen(0, "127.0.0.1", resolve));
    canaryPort = (canary.address() as net.AddressInfo).port;
    // 127.0.0.2 is allowlisted below, so its redirects into refused addresses are the test
    redirector = http.createServer((req, res) => {
      const target = decodeURIComponent((req.url ?? "/").slice(1));
      res.writeHead(302, { location: target }).end();
    });
    await new Promise<void>((resolve) => redirector.listen(0, "127.0.0.2", resolve));
    redirectorPort = (redirector.address() as net.AddressInfo).port;
    worker = await startWorker({
      REDIS_URL: url,
      CLIPGUARD_QUEUE: ns,
      CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`,
      CLIPGUARD_POLICIES: policies,
      CLIPGUARD_ALLOWED_HOSTS: "127.0.0.2",
      CLIPGUARD_FETCH_TIMEOUT_MS: "2000",
    });
    queue = new Queue(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
    events = new QueueEvents(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
    await events.waitUntilReady();
  });

  afterAll(async () => {
    await worker.stop();
    await queue.obliterate({ force: true });
    await Promise.all([queue.close(), events.close()]);
    await cleanupNamespace(redis, ns);
    redis.disconnect();
    await Promise.all([canary, redirector].map((s) => new Promise((r) => s.close(r))));
  });

  const p = () => canaryPort;
  const forms: [string, () => string][] = [
    ["loopback", () => `http://127.0.0.1:${p()}/x.png`],
    ["localhost", () => `http://localhost:${p()}/x.png`],
    ["decimal", () => `http://2130706433:${p()}/x.png`],
    ["hex", () => `http://0x7f000001:${p()}/x.png`],
    ["octal", () => `http://0177.0.0.1:${p()}/x.png`],
    ["short", () => `http://127.1:${p()}/x.png`],
    ["IPv6 loopback", () => `http://[::1]:${p()}/x.png`],
    ["IPv4-mapped IPv6", () => `http://[::ffff:127.0.0.1]:${p()}/x.png`],
    ["unspecified", () => `http://0.0.0.0:${p()}/x.png`],
    ["metadata service", () => "http://169.254.169.254/latest/meta-data/"],
    ["RFC 1918 10/8", () => "http://10.0.0.1/x.png"],
    ["RFC 1918 172.16/12", () => "http://172.16.0.1/x.png"],
    ["RFC 1918 192.168/16", () => "http://192.168.1.1/x.png"],
    ["CGNAT", () => "http://100.64.0.1/x.png"],
    ["unique local IPv6", () => "http://[fd00::1]/x.png"],
    ["redirect into loopback", () => `http://127.0.0.2:${redirectorPort}/${encodeURIComponent(`http://127.0.0.1:${p()}/x.png`)}`],
    ["redirect into metadata", () => `http://127.0.0.2:${redirectorPort}/${encodeURIComponent("http://169.254.169.254/")}`],
    ["file scheme", () => "file:///etc/passwd"],
    ["userinfo", () => `http://user:pass@127.0.0.2:${redirectorPort}/`],
  ];

  it.each(forms)("refuses %s as CLIPGUARD_E_URL_REFUSED, and the canary sees no connection", async (_name, form) => {
    const job = await queue.add("moderate", { image: { url: form() } }, { attempts: 3 });
    await job.waitUntilFinished(events, 15_000).catch(() => undefined);
    const fresh = await queue.getJob(job.id!);
    expect(await fresh!.getState()).toBe("failed");
    expect(fresh!.attemptsMade).toBe(1);
    const entries = (await redis.xrange(`${ns}:verdicts`, "-", "+")).filter(([, f]) => f[1] === job.id);
    const verdict = JSON.parse(entries[0]![1][5]!) as JobVerdict;
    expect(verdict.error?.code).toBe("CLIPGUARD_E_URL_REFUSED");
    expect(canaryConnections).toBe(0);
  });

  it("refuses callback URLs into private addresses", async () => {
    const job = await queue.add("moderate", { image: { url: `http://127.0.0.1:${p()}/x.png` }, callbackUrl: `http://127.0.0.1:${p()}/hook` });
    await job.waitUntilFinished(events, 15_000).catch(() => undefined);
    expect(canaryConnections).toBe(0);
  });
});

describe("worker: /readyz follows Redis", () => {
  let redisServer: ChildProcess | undefined;
  let worker: WorkerProcess | undefined;
  let port = 0;

  const startRedis = async () => {
    redisServer = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
    const probe = new Redis(port, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    for (let i = 0; i < 50; i++) {
      try {
        await probe.connect();
        await probe.ping();
        probe.disconnect();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error("redis-server did not start");
  };

  afterAll(async () => {
    await worker?.stop("SIGKILL");
    redisServer?.kill("SIGKILL");
  });

  it.skipIf(process.env["CLIPGUARD_NO_REDIS_SERVER"] === "1")("is 503 while Redis is down and 200 again when it is back", async () => {
    const free = net.createServer();
    await new Promise<void>((resolve) => free.listen(0, "127.0.0.1", resolve));
    port = (free.address() as net.AddressInfo).port;
    await new Promise((r) => free.close(r));
    await startRedis();
    const ns = testNamespace();
    worker = await startWorker({ REDIS_URL: `redis://127.0.0.1:${port}`, CLIPGUARD_QUEUE: ns, CLIPGUARD_VERDICT_STREAM: `${ns}:v` });
    const ready = () => fetch(`http://127.0.0.1:${worker!.metricsPort}/readyz`).then((r) => r.status);
    const healthy = () => fetch(`http://127.0.0.1:${worker!.metricsPort}/healthz`).then((r) => r.status);
    expect(await ready()).toBe(200);
    redisServer!.kill("SIGKILL");
    await new Promise((r) => setTimeout(r, 300));
    expect(await ready()).toBe(503);
    expect(await healthy()).toBe(200);
    await startRedis();
    let status = 0;
    for (let i = 0; i < 50 && status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 200));
      status = await ready();
    }
    expect(status).toBe(200);
  });
});
