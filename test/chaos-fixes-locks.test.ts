/**
 * Regression tests for what the chaos suite's lock-health and shutdown scenarios found
 * (chaos/lock-health.chaos.ts, chaos/shutdown.chaos.ts):
 * - a worker whose job could not finish within CLIPGUARD_SHUTDOWN_GRACE_MS never exited: after the
 *   grace period it called BullMQ's `close(true)`, which hands back the close already under way
 *   and so kept waiting for the job;
 * - lost locks and stalled jobs were visible only in logs: they are now counted in metrics.
 */
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

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("worker locks and shutdown (chaos fixes)", () => {
  let ns: string;
  let url: string;
  let redis: Redis;
  let queue: Queue;
  let policies: string;
  const workers: WorkerProcess[] = [];
  let server: http.Server | undefined;
  const held: http.ServerResponse[] = [];
  let requests = 0;
  let png: Buffer;

  /** An image server that holds the first request unanswered and answers the others at once. */
  const serveHoldingFirst = async (): Promise<string> => {
    server = http.createServer((req, res) => {
      req.resume();
      requests++;
      if (requests === 1) held.push(res);
      else res.writeHead(200, { "content-type": "image/png" }).end(png);
    });
    await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/image.png`;
  };

  const spawnWorker = async (extra: Record<string, string>) => {
    const worker = await startWorker({
      REDIS_URL: url,
      CLIPGUARD_QUEUE: ns,
      CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`,
      CLIPGUARD_REVIEW_STREAM: `${ns}:review`,
      CLIPGUARD_POLICIES: policies,
      CLIPGUARD_ALLOW_PRIVATE_URLS: "true",
      CLIPGUARD_FETCH_TIMEOUT_MS: "120000",
      CLIPGUARD_LOCK_DURATION_MS: "1000",
      CLIPGUARD_STALLED_INTERVAL_MS: "500",
      ...extra,
    });
    workers.push(worker);
    return worker;
  };
  const verdicts = async (jobId: string) =>
    (await redis.xrange(`${ns}:verdicts`, "-", "+")).filter(([, f]) => f[1] === jobId).map(([, f]) => JSON.parse(f[5]!) as JobVerdict);

  beforeEach(async () => {
    ns = testNamespace();
    url = await testRedisUrl();
    redis = new Redis(url);
    queue = new Queue(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
    policies = path.join(await tempDir(), "policies.yaml");
    await fs.writeFile(policies, colourPolicies(ns));
    png = await solidPng(RED);
    requests = 0;
  });

  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop("SIGKILL")));
    for (const res of held.splice(0)) res.destroy();
    if (server !== undefined) await new Promise((resolve) => server!.close(resolve));
    server = undefined;
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    await cleanupNamespace(redis, ns);
    redis.disconnect();
  });

  it("exits 0 once the grace period is over with a job still in flight, and another worker re-runs the job (one verdict, counted as stalled)", async () => {
    const imageUrl = await serveHoldingFirst();
    const first = await spawnWorker({ CLIPGUARD_SHUTDOWN_GRACE_MS: "500" });
    const job = await queue.add("moderate", { image: { url: imageUrl } }, { attempts: 3 });
    await until(async () => (requests >= 1 ? true : undefined), 20_000, "the image request");

    // before the fix the worker waited for the job, i.e. for as long as the server held the request
    const exit = await Promise.race([first.stop("SIGTERM"), new Promise<string>((r) => setTimeout(() => r("still running after 15 s"), 15_000))]);
    expect(exit).toBe(0);
    expect(first.logs.some((l) => l["msg"] === "grace period over; closing with jobs in flight (their locks expire and they are retried)")).toBe(true);
    expect(first.logs.some((l) => l["msg"] === "stopped")).toBe(true);

    const second = await spawnWorker({});
    const [verdict, ...more] = await until(async () => {
      const found = await verdicts(job.id!);
      return found.length > 0 ? found : undefined;
    }, 30_000, "the verdict of the re-run job");
    expect(more).toHaveLength(0);
    expect(verdict!.decision).not.toBe("error");
    expect(requests).toBe(2);
    expect(await second.metric("clipguard_jobs_stalled_total")).toBe(1);
    expect(second.logs.filter((l) => l["msg"] === "stalled job moved back to wait (its worker died or lost the lock)")).toHaveLength(1);
    expect(await second.metric("clipguard_lock_renewal_failures_total")).toBe(0);
  });

  it("counts a job lock it could not renew in clipguard_lock_renewal_failures_total", async () => {
    const imageUrl = await serveHoldingFirst();
    const worker = await spawnWorker({});
    expect(await worker.metric("clipguard_lock_renewal_failures_total")).toBe(0);
    const job = await queue.add("moderate", { image: { url: imageUrl } });
    await until(async () => (requests >= 1 ? true : undefined), 20_000, "the image request");
    // the lock disappears under the running job, as when Redis lost it or the lock expired
    expect(await redis.del(`bull:${ns}:${job.id}:lock`)).toBe(1);
    await until(async () => (((await worker.metric("clipguard_lock_renewal_failures_total")) ?? 0) >= 1 ? true : undefined), 10_000, "the renewal failure");
    expect(worker.logs.some((l) => JSON.stringify(l).includes(`could not renew lock for job ${job.id}`))).toBe(true);
  });
});
