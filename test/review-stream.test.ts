import fs from "node:fs/promises";
import path from "node:path";
import { Queue, QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobVerdict } from "../src/shared/job-schema.js";
import { VerdictPublisher } from "../src/worker/verdict-publisher.js";
import { BLUE, colourPolicies, RED, solidPng, tempDir } from "./support/fixtures.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { startWorker, type WorkerProcess } from "./support/worker-process.js";

let redis: Redis;
const namespaces: string[] = [];

beforeAll(async () => {
  redis = new Redis(await testRedisUrl());
});

afterAll(async () => {
  for (const ns of namespaces) await cleanupNamespace(redis, ns);
  redis.disconnect();
});

function verdict(jobId: string, decision: JobVerdict["decision"]): JobVerdict {
  return {
    jobId,
    decision,
    policies: [],
    model: { name: "m", fingerprint: "f" },
    policyVersion: "v",
    timings: { queuedMs: 0, fetchMs: 0, decodeMs: 0, inferenceMs: 0, totalMs: 0 },
    createdAt: new Date(0).toISOString(),
  };
}

describe("review stream: the publisher", () => {
  it("appends a review verdict to the review stream exactly once, with the verdict stream's fields, and nothing else", async () => {
    const ns = testNamespace();
    namespaces.push(ns);
    const publisher = new VerdictPublisher(redis, { stream: `${ns}:verdicts`, reviewStream: `${ns}:review`, maxLen: 1000 });
    const first = await publisher.publish(verdict("job-r", "review"));
    const again = await publisher.publish(verdict("job-r", "review")); // a retried or re-run job
    expect([first.added, again.added, again.entryId]).toEqual([true, false, first.entryId]);
    for (const decision of ["allow", "block", "error"] as const) await publisher.publish(verdict(`job-${decision}`, decision));

    const review = await redis.xrange(`${ns}:review`, "-", "+");
    expect(review).toHaveLength(1);
    const main = await redis.xrange(`${ns}:verdicts`, first.entryId, first.entryId);
    expect(review[0]![1]).toEqual(main[0]![1]);
    expect(review[0]![1].slice(0, 4)).toEqual(["jobId", "job-r", "decision", "review"]);
    expect(await redis.xlen(`${ns}:verdicts`)).toBe(4);
  });

  it("writes no review entries when no review stream is configured", async () => {
    const ns = testNamespace();
    namespaces.push(ns);
    const publisher = new VerdictPublisher(redis, { stream: `${ns}:verdicts`, maxLen: 1000 });
    await publisher.publish(verdict("job-r", "review"));
    expect(await redis.xlen(`${ns}:verdicts`)).toBe(1);
    expect(await redis.exists(`${ns}:review`)).toBe(0);
  });

  it("can be read by a consumer group", async () => {
    const ns = testNamespace();
    namespaces.push(ns);
    const publisher = new VerdictPublisher(redis, { stream: `${ns}:verdicts`, reviewStream: `${ns}:review`, maxLen: 1000 });
    await redis.xgroup("CREATE", `${ns}:review`, "reviewers", "$", "MKSTREAM");
    await publisher.publish(verdict("job-g", "review"));
    const read = (await redis.xreadgroup("GROUP", "reviewers", "alice", "COUNT", 10, "STREAMS", `${ns}:review`, ">")) as [string, [string, string[]][]][];
    expect(read[0]![1].map(([, fields]) => fields[1])).toEqual(["job-g"]);
  });
});

describe("review stream: the worker", () => {
  const ns = testNamespace();
  let worker: WorkerProcess;
  let queue: Queue;
  let events: QueueEvents;

  beforeAll(async () => {
    namespaces.push(ns);
    const url = await testRedisUrl();
    const dir = await tempDir();
    const policies = path.join(dir, "policies.yaml");
    await fs.writeFile(policies, colourPolicies(ns));
    worker = await startWorker({
      REDIS_URL: url,
      CLIPGUARD_QUEUE: ns,
      CLIPGUARD_POLICIES: policies,
      CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`,
      CLIPGUARD_REVIEW_STREAM: `${ns}:review`,
    });
    queue = new Queue(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
    events = new QueueEvents(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
    await events.waitUntilReady();
  });

  afterAll(async () => {
    expect(await worker.stop()).toBe(0);
    await queue.obliterate({ force: true });
    await Promise.all([queue.close(), events.close()]);
  });

  it("appends review verdicts, and only those, to CLIPGUARD_REVIEW_STREAM once per job", async () => {
    const shade = Number.parseInt(ns.slice(-2), 16) % 16;
    const images = { review: await solidPng([BLUE[0] + shade, BLUE[1], BLUE[2]]), block: await solidPng([RED[0] + shade, RED[1], RED[2]]) };
    const results: Record<string, JobVerdict> = {};
    for (const [name, png] of Object.entries(images)) {
      const job = await queue.add("moderate", { image: { base64: png.toString("base64") } });
      results[name] = (await job.waitUntilFinished(events, 30_000)) as JobVerdict;
    }
    expect(results["review"]?.decision).toBe("review");
    expect(results["block"]?.decision).toBe("block");
    const review = await redis.xrange(`${ns}:review`, "-", "+");
    expect(review.map(([, fields]) => fields[1])).toEqual([results["review"]!.jobId]);
    expect(JSON.parse(review[0]![1][5]!)).toEqual(results["review"]);
  });
});
