import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Queue, QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobVerdict } from "../src/shared/job-schema.js";
import { BLUE, colourPolicies, GRAY, RED, solidPng, tempDir } from "./support/fixtures.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { startWorker, type WorkerProcess } from "./support/worker-process.js";

const SECRET = "whsec_" + Buffer.from("clipguard-test-secret-0123456789").toString("base64");

describe("worker: jobs in, verdicts out", () => {
  const ns = testNamespace();
  const stream = `${ns}:verdicts`;
  let redis: Redis;
  let queue: Queue;
  let events: QueueEvents;
  let worker: WorkerProcess;
  let server: http.Server;
  let baseUrl = "";
  const received: { headers: http.IncomingHttpHeaders; body: string }[] = [];

  beforeAll(async () => {
    const url = await testRedisUrl();
    redis = new Redis(url);
    const dir = await tempDir();
    const policies = path.join(dir, "policies.yaml");
    await fs.writeFile(policies, colourPolicies(ns));
    const red = await solidPng(RED);
    server = http.createServer((req, res) => {
      if (req.url === "/red.png") {
        res.writeHead(200, { "content-type": "image/png" }).end(red);
      } else if (req.url === "/hook") {
        let body = "";
        req.on("data", (c: Buffer) => (body += c.toString()));
        req.on("end", () => {
          received.push({ headers: req.headers, body });
          res.writeHead(204).end();
        });
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    worker = await startWorker({
      REDIS_URL: url,
      CLIPGUARD_QUEUE: ns,
      CLIPGUARD_VERDICT_STREAM: stream,
      CLIPGUARD_POLICIES: policies,
      CLIPGUARD_ALLOW_PRIVATE_URLS: "true",
      CLIPGUARD_WEBHOOK_SECRET: SECRET,
    });
    queue = new Queue(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
    events = new QueueEvents(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
    await events.waitUntilReady();
  });

  afterAll(async () => {
    expect(await worker.stop()).toBe(0);
    await queue.obliterate({ force: true });
    await Promise.all([queue.close(), events.close()]);
    await cleanupNamespace(redis, ns);
    redis.disconnect();
    await new Promise((resolve) => server.close(resolve));
  });

  async function run(data: unknown, attempts = 1): Promise<{ state: "completed" | "failed"; verdict: JobVerdict; attemptsMade: number }> {
    const job = await queue.add("moderate", data, { attempts, backoff: { type: "fixed", delay: 100 } });
    try {
      await job.waitUntilFinished(events, 30_000);
    } catch {
      // failed jobs reject; the stream entry has the error verdict
    }
    const fresh = await queue.getJob(job.id!);
    const state = (await fresh!.getState()) as "completed" | "failed";
    const entries = await redis.xrange(stream, "-", "+");
    const mine = entries.filter(([, fields]) => fields[1] === job.id);
    expect(mine).toHaveLength(1);
    const fields = mine[0]![1];
    expect(fields.slice(0, 4)).toEqual(["jobId", job.id, "decision", expect.any(String)]);
    const verdict = JSON.parse(fields[5]!) as JobVerdict;
    expect(fields[3]).toBe(verdict.decision);
    if (state === "completed") expect(fresh!.returnvalue).toEqual(verdict);
    return { state, verdict, attemptsMade: fresh!.attemptsMade };
  }

  it("judges a base64 image and publishes the verdict once, with job fields and timings", async () => {
    const png = await solidPng(RED);
    const { state, verdict } = await run({ image: { base64: png.toString("base64") }, imageId: "img-1", metadata: { tenant: "t1" } });
    expect(state).toBe("completed");
    expect(verdict.decision).toBe("block");
    expect(verdict.imageId).toBe("img-1");
    expect(verdict.metadata).toEqual({ tenant: "t1" });
    expect(verdict.policies.map((p) => p.id)).toEqual(["red", "blue"]);
    expect(verdict.policies[0]).toMatchObject({ id: "red", decision: "block", prompt: expect.stringContaining("red") });
    expect(verdict.model.fingerprint).toMatch(/^[0-9a-f]{16}$/);
    expect(verdict.policyVersion).toMatch(/^[0-9a-f]{12}$/);
    expect(Object.keys(verdict.timings).sort()).toEqual(["decodeMs", "fetchMs", "inferenceMs", "queuedMs", "totalMs"]);
    expect(Date.parse(verdict.createdAt)).not.toBeNaN();
  });

  it("judges a ref image and deletes the bytes afterwards", async () => {
    const key = `clipguard:ref:${ns.replaceAll("-", "")}`;
    await redis.set(key, await solidPng(BLUE), "EX", 600);
    const { state, verdict } = await run({ image: { ref: key } });
    expect(state).toBe("completed");
    expect(verdict.policies.find((p) => p.id === "blue")?.decision).toBe("review");
    expect(verdict.policies.find((p) => p.id === "red")?.decision).toBe("allow");
    expect(await redis.exists(key)).toBe(0);
  });

  it("fetches a URL (loopback allowed in this test) and delivers a signed webhook", async () => {
    const { state, verdict } = await run({ image: { url: `${baseUrl}/red.png` }, callbackUrl: `${baseUrl}/hook` });
    expect(state).toBe("completed");
    expect(verdict.decision).toBe("block");
    const hook = received.find((r) => r.headers["webhook-id"] === verdict.jobId);
    expect(hook).toBeDefined();
    const headers = {
      "webhook-id": String(hook!.headers["webhook-id"]),
      "webhook-timestamp": String(hook!.headers["webhook-timestamp"]),
      "webhook-signature": String(hook!.headers["webhook-signature"]),
    };
    expect(new Webhook(SECRET).verify(hook!.body, headers)).toEqual(verdict);
    expect(() => new Webhook(SECRET).verify(hook!.body.replace("block", "allow"), headers)).toThrow();
  });

  it.each([
    ["no image", { imageId: "x" }, "CLIPGUARD_E_JOB_INVALID"],
    ["two sources", { image: { url: "http://a", base64: "AA==" } }, "CLIPGUARD_E_JOB_INVALID"],
    ["unknown key", { image: { base64: "AA==" }, colour: "red" }, "CLIPGUARD_E_JOB_INVALID"],
    ["ref outside its key space", { image: { ref: "bull:jobs:1" } }, "CLIPGUARD_E_JOB_INVALID"],
    ["not base64", { image: { base64: "!!not base64!!" } }, "CLIPGUARD_E_BASE64"],
    ["random bytes", { image: { base64: Buffer.from("hello world, not an image").toString("base64") } }, "CLIPGUARD_E_IMAGE_FORMAT"],
    ["missing ref", { image: { ref: "clipguard:ref:doesnotexist0" } }, "CLIPGUARD_E_REF_MISSING"],
    ["unknown policy", { image: { base64: "iVBORw0KGgo=" }, policies: ["nope"] }, "CLIPGUARD_E_POLICY_UNKNOWN"],
  ])("fails bad input (%s) at once as unrecoverable with an error verdict", async (_name, data, code) => {
    const { state, verdict, attemptsMade } = await run(data, 3);
    expect(state).toBe("failed");
    expect(attemptsMade).toBe(1);
    expect(verdict.decision).toBe("error");
    expect(verdict.error?.code).toBe(code);
  });

  it("judges only the requested policies", async () => {
    const png = await solidPng(GRAY);
    const { verdict } = await run({ image: { base64: png.toString("base64") }, policies: ["blue"] });
    expect(verdict.policies.map((p) => p.id)).toEqual(["blue"]);
    expect(verdict.decision).toBe("allow");
  });

  it("judges a duplicate image from the embedding cache, without inference, against the current policies", async () => {
    // a colour unique to this run, so the image's sha256 is new to the shared cache
    const shade = Number.parseInt(ns.slice(-2), 16);
    const png = (await solidPng([200, shade % 60, 40])).toString("base64");
    const inferences = async () => (await worker.metric("clipguard_stage_duration_seconds_count", { stage: "inference" })) ?? 0;
    const first = await run({ image: { base64: png } });
    const after1 = await inferences();
    const second = await run({ image: { base64: png } });
    expect(await inferences()).toBe(after1);
    expect(second.verdict.policies).toEqual(first.verdict.policies);
    expect(second.verdict.imageSha256).toBe(first.verdict.imageSha256);
    expect(second.verdict.timings.inferenceMs).toBe(0);
    expect(await worker.metric("clipguard_image_embedding_cache_total", { result: "hit" })).toBeGreaterThanOrEqual(1);
  });

  it("counts what it did in the metrics", async () => {
    expect(await worker.metric("clipguard_jobs_completed_total", { decision: "block" })).toBeGreaterThanOrEqual(4);
    expect(await worker.metric("clipguard_jobs_completed_total", { decision: "error" })).toBe(8);
    expect(await worker.metric("clipguard_job_failures_total", { code: "CLIPGUARD_E_JOB_INVALID" })).toBe(4);
    expect(await worker.metric("clipguard_policy_decisions_total", { policy: "red", decision: "block" })).toBeGreaterThanOrEqual(2);
    const inferences = (await worker.metric("clipguard_stage_duration_seconds_count", { stage: "inference" })) ?? 0;
    const cacheHits = (await worker.metric("clipguard_image_embedding_cache_total", { result: "hit" })) ?? 0;
    expect(inferences + cacheHits).toBeGreaterThanOrEqual(5);
    expect(await worker.metric("clipguard_inference_batch_size_sum")).toBe(inferences);
    expect(await worker.metric("clipguard_queue_jobs", { state: "waiting" })).toBe(0);
    expect(await worker.metric("clipguard_model_info")).toBe(1);
    const text = await worker.metrics();
    expect(text).toContain("clipguard_process_resident_memory_bytes");
    const ready = await fetch(`http://127.0.0.1:${worker.metricsPort}/readyz`);
    expect(ready.status).toBe(200);
  });
});
