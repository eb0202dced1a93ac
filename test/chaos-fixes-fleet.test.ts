/**
 * Regression tests for what the chaos suite's crash scenario found (chaos/crash.chaos.ts):
 * a job whose worker was killed twice was failed by BullMQ's stalled limit without a verdict or
 * a webhook, and a re-sent webhook carried a fresh verdict instead of the published one.
 */
import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { Webhook } from "standardwebhooks";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RELEASED_IMAGE, type JobVerdict } from "../src/shared/job-schema.js";
import { VerdictPublisher } from "../src/worker/verdict-publisher.js";
import { colourPolicies, RED, solidPng, tempDir } from "./support/fixtures.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { startWorker, type WorkerProcess } from "./support/worker-process.js";

const SECRET = "whsec_" + Buffer.from("clipguard-chaos-fixes-fleet-secret").toString("base64");

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function verdictOf(jobId: string, decision: JobVerdict["decision"], createdAt: string): JobVerdict {
  return {
    jobId,
    decision,
    policies: [],
    model: { name: "m", fingerprint: "f" },
    policyVersion: "v",
    timings: { queuedMs: 0, fetchMs: 0, decodeMs: 0, inferenceMs: 0, totalMs: 0 },
    createdAt,
  };
}

describe("chaos fixes: crashes and stalled jobs", () => {
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
    CLIPGUARD_WATCH_POLICIES: "false",
    CLIPGUARD_ALLOWED_HOSTS: "127.0.0.1",
    CLIPGUARD_WEBHOOK_SECRET: SECRET,
    CLIPGUARD_LOCK_DURATION_MS: "2000",
    CLIPGUARD_STALLED_INTERVAL_MS: "1000",
    CLIPGUARD_FETCH_TIMEOUT_MS: "60000",
    CLIPGUARD_WEBHOOK_TIMEOUT_MS: "60000",
    ...extra,
  });
  /** A loopback server; `handler` gets the request's number (1, 2, …) and its body. */
  const serve = async (handler: (n: number, req: http.IncomingMessage, body: string, res: http.ServerResponse) => void): Promise<string> => {
    let n = 0;
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => handler(++n, req, Buffer.concat(chunks).toString("utf8"), res));
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };
  /** Starts a worker, waits for `moment`, SIGKILLs it: the job it holds stalls once. */
  const killDuring = async (moment: Promise<void>, extra: Record<string, string> = {}) => {
    const worker = await startWorker(env(extra));
    workers.push(worker);
    await moment;
    await worker.stop("SIGKILL");
  };
  /** Serves a red PNG and records verified webhooks; the first webhook is never answered (its worker is killed meanwhile). */
  const imageAndStuckFirstHook = async () => {
    const png = await solidPng(RED);
    let onFirstHook: () => void = () => undefined;
    const firstHook = new Promise<void>((resolve) => (onFirstHook = resolve));
    const hooks: { id: string; body: string }[] = [];
    const base = await serve((_n, req, body, res) => {
      if (req.url !== "/hook") {
        res.writeHead(200, { "content-type": "image/png" }).end(png);
        return;
      }
      new Webhook(SECRET).verify(body, req.headers as Record<string, string>);
      hooks.push({ id: String(req.headers["webhook-id"]), body });
      if (hooks.length === 1) return onFirstHook();
      res.writeHead(204).end();
    });
    return { base, firstHook, hooks };
  };
  const streamEntries = async (jobId: string) =>
    (await redis.xrange(`${ns}:verdicts`, "-", "+")).filter(([, f]) => f[1] === jobId).map(([, f]) => JSON.parse(f[5]!) as JobVerdict);
  const finished = async (jobId: string) =>
    until(async () => {
      const job = await queue.getJob(jobId);
      return job?.finishedOn !== undefined ? job : undefined;
    }, 30_000, "the job to finish");

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

  it("a job whose worker is killed twice is run a third time and gets its one verdict", async () => {
    const png = await solidPng(RED);
    const arrivals: (() => void)[] = [];
    const arrived = [0, 1].map((i) => new Promise<void>((resolve) => (arrivals[i] = resolve)));
    const base = await serve((n, _req, _body, res) => {
      if (n <= 2) return arrivals[n - 1]!(); // never answered: the worker fetching it is killed
      res.writeHead(200, { "content-type": "image/png" }).end(png);
    });
    const job = await queue.add("moderate", { image: { url: `${base}/red.png` } }, { attempts: 3 });
    await killDuring(arrived[0]!);
    await killDuring(arrived[1]!);
    workers.push(await startWorker(env()));
    const done = await finished(job.id!);
    expect(await done.getState()).toBe("completed");
    expect(done.stalledCounter).toBe(2);
    const entries = await streamEntries(job.id!);
    expect(entries.map((e) => e.decision)).toEqual(["block"]);
  });

  it("a job that stalls more often than CLIPGUARD_MAX_STALLS gets one CLIPGUARD_E_JOB_STALLED verdict and its webhook, without its image being fetched again", async () => {
    let imageRequests = 0;
    let onImage: () => void = () => undefined;
    const imageRequested = new Promise<void>((resolve) => (onImage = resolve));
    const base = await serve((_n, req, body, res) => {
      if (req.url === "/hook") {
        hooks.push({ id: String(req.headers["webhook-id"]), verdict: new Webhook(SECRET).verify(body, req.headers as Record<string, string>) as JobVerdict });
        res.writeHead(204).end();
        return;
      }
      imageRequests++;
      onImage(); // never answered: the image "kills" the worker
    });
    const hooks: { id: string; verdict: JobVerdict }[] = [];
    const job = await queue.add("moderate", { image: { url: `${base}/poison.png` }, imageId: "poison-1", callbackUrl: `${base}/hook` }, { attempts: 3 });
    await killDuring(imageRequested, { CLIPGUARD_MAX_STALLS: "0" });
    const survivor = await startWorker(env({ CLIPGUARD_MAX_STALLS: "0" }));
    workers.push(survivor);
    const done = await finished(job.id!);
    expect(await done.getState()).toBe("failed");
    expect(done.failedReason).toMatch(/^CLIPGUARD_E_JOB_STALLED: /);
    const entries = await streamEntries(job.id!);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ decision: "error", imageId: "poison-1", error: { code: "CLIPGUARD_E_JOB_STALLED" } });
    expect(hooks).toEqual([{ id: job.id, verdict: entries[0] }]);
    expect(imageRequests).toBe(1);
    expect(await survivor.metric("clipguard_job_failures_total", { code: "CLIPGUARD_E_JOB_STALLED" })).toBe(1);
  });

  it("a job killed after publishing keeps its verdict, and the re-sent webhook is the same message", async () => {
    const { base, firstHook, hooks } = await imageAndStuckFirstHook();
    const job = await queue.add("moderate", { image: { url: `${base}/red.png` }, callbackUrl: `${base}/hook` }, { attempts: 3 });
    // with CLIPGUARD_MAX_STALLS=0 the re-run goes straight to the stall limit, which must keep the published verdict
    await killDuring(firstHook, { CLIPGUARD_MAX_STALLS: "0" });
    workers.push(await startWorker(env({ CLIPGUARD_MAX_STALLS: "0" })));
    const done = await finished(job.id!);
    expect(await done.getState()).toBe("completed");
    const entries = await streamEntries(job.id!);
    expect(entries.map((e) => e.decision)).toEqual(["block"]);
    expect(hooks).toHaveLength(2);
    expect(hooks.map((h) => h.id)).toEqual([job.id, job.id]);
    expect(hooks[1]!.body).toBe(hooks[0]!.body);
    expect(JSON.parse(hooks[0]!.body)).toEqual(entries[0]);
  });

  it("a job re-run after publishing re-sends the published verdict: same webhook-id, same body", async () => {
    const { base, firstHook, hooks } = await imageAndStuckFirstHook();
    const job = await queue.add("moderate", { image: { url: `${base}/red.png` }, callbackUrl: `${base}/hook` }, { attempts: 3 });
    await killDuring(firstHook); // the re-run judges the image again (new timings, new createdAt)
    workers.push(await startWorker(env()));
    const done = await finished(job.id!);
    expect(await done.getState()).toBe("completed");
    const entries = await streamEntries(job.id!);
    expect(entries).toHaveLength(1);
    expect(hooks.map((h) => h.id)).toEqual([job.id, job.id]);
    expect(hooks[1]!.body).toBe(hooks[0]!.body);
    expect(JSON.parse(hooks[1]!.body)).toEqual(entries[0]);
    expect(done.returnvalue).toEqual(entries[0]);
  });

  it("a finished job keeps no inline image bytes, whether it got a verdict or an error", async () => {
    const good = (await solidPng(RED)).toString("base64");
    workers.push(await startWorker(env()));
    const judged = await queue.add("moderate", { image: { base64: good } }, { attempts: 3 });
    const refused = await queue.add("moderate", { image: { base64: Buffer.from("not an image at all").toString("base64") } }, { attempts: 3 });
    const [a, b] = [await finished(judged.id!), await finished(refused.id!)];
    expect(await a.getState()).toBe("completed");
    expect(await b.getState()).toBe("failed");
    for (const job of [a, b]) {
      expect((job.data as { image: unknown }).image).toEqual(RELEASED_IMAGE);
      expect(await redis.exists(RELEASED_IMAGE.ref)).toBe(0);
    }
    expect(JSON.stringify(await redis.hgetall(`bull:${ns}:${judged.id!}`))).not.toContain(good.slice(0, 64));
  });

  it("a callbackUrl refused by the address rules fails the job after one run (its verdict published once)", async () => {
    const png = await solidPng(RED);
    const base = await serve((_n, _req, _body, res) => res.writeHead(200, { "content-type": "image/png" }).end(png));
    workers.push(await startWorker(env()));
    const job = await queue.add("moderate", { image: { url: `${base}/red.png` }, callbackUrl: "http://10.1.2.3/hook" }, { attempts: 3 });
    const done = await finished(job.id!);
    expect(await done.getState()).toBe("failed");
    expect(done.attemptsMade).toBe(1);
    expect(done.failedReason).toMatch(/^CLIPGUARD_E_URL_REFUSED: /);
    expect((await streamEntries(job.id!)).map((e) => e.decision)).toEqual(["block"]);
  });

  it("publishing a job's verdict again adds nothing and returns the verdict published first", async () => {
    const publisher = new VerdictPublisher(redis, { stream: `${ns}:verdicts`, maxLen: 1000 });
    const first = verdictOf("job-a", "block", "2024-01-01T00:00:00.000Z");
    const again = verdictOf("job-a", "allow", "2024-01-01T00:00:09.000Z");
    const one = await publisher.publish(first);
    expect(one).toMatchObject({ added: true, verdict: first });
    const two = await publisher.publish(again);
    expect(two).toEqual({ added: false, entryId: one.entryId, verdict: first });
    expect(await streamEntries("job-a")).toEqual([first]);
    // the first entry trimmed away: the marker still holds, and the verdict given comes back
    await redis.xdel(`${ns}:verdicts`, one.entryId);
    expect(await publisher.publish(again)).toEqual({ added: false, entryId: one.entryId, verdict: again });
    expect(await streamEntries("job-a")).toEqual([]);
  });
});
