import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Queue, UnrecoverableError, Worker } from "bullmq";
import { Redis } from "ioredis";
import sharp from "sharp";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ModerationClient } from "../src/client/moderation-client.js";
import { isClipguardError, type ErrorCode } from "../src/shared/errors.js";
import { JOB_NAME, jobDataSchema, type JobData } from "../src/shared/job-schema.js";
import { RED, solidPng, tempDir } from "./support/fixtures.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { startWorker, type WorkerProcess } from "./support/worker-process.js";

const RED_POSTER = path.resolve("examples/images/red-poster.png");

async function codeOf(promise: Promise<unknown>): Promise<ErrorCode | "resolved" | "not a ClipguardError"> {
  try {
    await promise;
    return "resolved";
  } catch (err) {
    return isClipguardError(err) ? err.code : "not a ClipguardError";
  }
}

/** A PNG of random pixels: noise does not compress, so `side` 400 gives ~480 KB, over the ref threshold. */
async function noisePng(side: number): Promise<Buffer> {
  return sharp(randomBytes(side * side * 3), { raw: { width: side, height: side, channels: 3 } }).png({ compressionLevel: 1 }).toBuffer();
}

/** The verdict is published before BullMQ moves the job to completed/failed: poll for the state. */
async function untilState(client: ModerationClient, jobId: string, state: string): Promise<string | undefined> {
  let current = (await client.getStatus(jobId))?.state;
  for (let i = 0; i < 200 && current !== state; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    current = (await client.getStatus(jobId))?.state;
  }
  return current;
}

let redisUrl: string;
let redis: Redis;

beforeAll(async () => {
  redisUrl = await testRedisUrl();
  redis = new Redis(redisUrl);
});

afterAll(async () => {
  redis?.disconnect();
});

describe("ModerationClient without a worker", () => {
  let ns: string;
  let client: ModerationClient;
  let queue: Queue<JobData>;

  const setup = (options: Partial<ConstructorParameters<typeof ModerationClient>[0]> = {}) => {
    ns = testNamespace();
    client = new ModerationClient({ redis: redisUrl, queue: ns, verdictStream: `${ns}:verdicts`, ...options });
    queue = new Queue<JobData>(ns, { connection: redis });
  };

  afterEach(async () => {
    await client.close();
    await queue.close();
    await cleanupNamespace(redis, ns);
  });

  it("puts a small Buffer into the job as base64, with the options and bounded retention", async () => {
    setup();
    const png = await solidPng(RED);
    const jobId = await client.enqueue(png, {
      imageId: "img-1",
      policies: ["mostly_red"],
      callbackUrl: "https://example.com/hook",
      metadata: { tenant: "t1" },
      priority: 3,
    });
    const job = await queue.getJob(jobId);
    expect(job?.name).toBe(JOB_NAME);
    expect(job?.data).toEqual({
      image: { base64: png.toString("base64") },
      imageId: "img-1",
      policies: ["mostly_red"],
      callbackUrl: "https://example.com/hook",
      metadata: { tenant: "t1" },
    });
    expect(jobDataSchema.safeParse(job?.data).success).toBe(true);
    expect(job?.opts.attempts).toBe(5);
    expect(job?.opts.backoff).toEqual({ type: "exponential", delay: 1000 });
    expect(job?.opts.priority).toBe(3);
    expect(job?.opts.removeOnComplete).toMatchObject({ count: 1000 });
    expect(job?.opts.removeOnFail).toMatchObject({ count: 5000 });
    expect(await job?.getState()).toBe("prioritized");
  });

  it("stores a large file under a clipguard:ref: key with a TTL instead of in the job", async () => {
    setup({ refTtlSeconds: 120 });
    const dir = await tempDir();
    const file = path.join(dir, "noise.png");
    const bytes = await noisePng(400);
    expect(bytes.length).toBeGreaterThan(256 * 1024);
    await fs.writeFile(file, bytes);

    const jobId = await client.enqueue(file);
    const job = await queue.getJob(jobId);
    expect(jobDataSchema.safeParse(job?.data).success).toBe(true);
    const image = job?.data.image;
    expect(image !== undefined && "ref" in image).toBe(true);
    const ref = (image as { ref: string }).ref;
    expect(ref).toMatch(/^clipguard:ref:[A-Za-z0-9_-]{8,128}$/);
    expect(await redis.getBuffer(ref)).toEqual(bytes);
    const ttl = await redis.ttl(ref);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(120);
    await redis.del(ref);
    await fs.rm(dir, { recursive: true });
  });

  it("sends big base64 through a ref, keeps URLs as URLs, and keeps the data small", async () => {
    setup();
    const bytes = await noisePng(400);
    const refJob = await queue.getJob(await client.enqueue({ base64: `data:image/png;base64,${bytes.toString("base64")}` }));
    const ref = (refJob?.data.image as { ref: string }).ref;
    expect(await redis.getBuffer(ref)).toEqual(bytes);
    await redis.del(ref);

    const urlJob = await queue.getJob(await client.enqueue("https://images.example.com/a.png"));
    expect(urlJob?.data.image).toEqual({ url: "https://images.example.com/a.png" });
    const objJob = await queue.getJob(await client.enqueue({ url: "http://127.0.0.1:9/b.png" }));
    expect(objJob?.data.image).toEqual({ url: "http://127.0.0.1:9/b.png" });
  });

  it("refuses bad inputs and options before enqueueing anything", async () => {
    setup({ maxImageBytes: 1000 });
    const cases: [() => Promise<unknown>, ErrorCode][] = [
      [() => client.enqueue("/definitely/not/here.png"), "CLIPGUARD_E_IMAGE_READ"],
      [() => client.enqueue(Buffer.alloc(0)), "CLIPGUARD_E_IMAGE_EMPTY"],
      [() => client.enqueue(Buffer.alloc(1001)), "CLIPGUARD_E_IMAGE_TOO_LARGE"],
      [() => client.enqueue({ base64: "not base64 at all!" }), "CLIPGUARD_E_BASE64"],
      [() => client.enqueue("ftp://example.com/a.png"), "CLIPGUARD_E_URL_REFUSED"],
      [() => client.enqueue({ url: "file:///etc/passwd" }), "CLIPGUARD_E_URL_REFUSED"],
      [() => client.enqueue(Buffer.from("x"), { policies: ["Not A Policy"] }), "CLIPGUARD_E_JOB_INVALID"],
      [() => client.enqueue(Buffer.from("x"), { jobId: "12345" }), "CLIPGUARD_E_JOB_INVALID"],
      [() => client.enqueue(Buffer.from("x"), { jobId: "a:b" }), "CLIPGUARD_E_JOB_INVALID"],
      [() => client.enqueue(Buffer.from("x"), { priority: 0 }), "CLIPGUARD_E_JOB_INVALID"],
      [() => client.enqueue(Buffer.from("x"), { callbackUrl: "javascript:alert(1)" }), "CLIPGUARD_E_URL_REFUSED"],
    ];
    for (const [enqueue, code] of cases) expect(await codeOf(enqueue())).toBe(code);
    expect(await queue.count()).toBe(0);
  });

  it("resubmitting with the same jobId adds one job and stores one ref", async () => {
    setup();
    const bytes = await noisePng(400);
    // at the same time (all pass the "exists?" check and race in BullMQ), then once more
    const ids = await Promise.all([1, 2, 3].map(() => client.enqueue(bytes, { jobId: "order-42" })));
    ids.push(await client.enqueue(bytes, { jobId: "order-42" }));
    expect(ids).toEqual(["order-42", "order-42", "order-42", "order-42"]);
    expect(await queue.count()).toBe(1);
    const refs: string[] = [];
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", "clipguard:ref:*", "COUNT", 1000);
      cursor = next;
      for (const key of keys) if ((await redis.getBuffer(key))?.equals(bytes) === true) refs.push(key);
    } while (cursor !== "0");
    expect(refs).toEqual([((await queue.getJob("order-42"))?.data.image as { ref: string }).ref]);
    await redis.del(...refs);
  });

  it("has no verdict for a queued job, no status for an unknown one, and times out waiting", async () => {
    setup();
    const jobId = await client.enqueue(await solidPng(RED));
    expect(await client.getVerdict(jobId)).toBeUndefined();
    expect(await client.getStatus(jobId)).toEqual({ state: "waiting", verdict: undefined });
    expect(await client.getStatus("no-such-job")).toBeUndefined();
    expect(await client.waitForVerdict(jobId, { timeoutMs: 200 })).toBeUndefined();
    expect(await codeOf(client.enqueueAndWait(await solidPng(RED), {}, { timeoutMs: 200 }))).toBe("CLIPGUARD_E_WAIT_TIMEOUT");
  });

  it("builds an error verdict for a job that failed without publishing one", async () => {
    setup();
    const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
    const worker = new Worker(
      ns,
      async () => {
        throw new UnrecoverableError("CLIPGUARD_E_IMAGE_DECODE: the image is truncated");
      },
      { connection },
    );
    try {
      const jobId = await client.enqueue(await solidPng(RED), { imageId: "broken" });
      expect(await untilState(client, jobId, "failed")).toBe("failed");
      const status = await client.getStatus(jobId);
      expect(status?.verdict).toMatchObject({
        jobId,
        imageId: "broken",
        decision: "error",
        policies: [],
        error: { code: "CLIPGUARD_E_IMAGE_DECODE", message: "the image is truncated" },
      });
    } finally {
      await worker.close();
      connection.disconnect();
    }
  });

  it("fails at once with CLIPGUARD_E_REDIS when Redis is unreachable", async () => {
    ns = testNamespace();
    queue = new Queue<JobData>(ns, { connection: redis });
    // port 1 refuses connections
    client = new ModerationClient({ redis: "redis://127.0.0.1:1", queue: ns, connectTimeoutMs: 30_000 });
    const started = Date.now();
    expect(await codeOf(client.enqueue(await solidPng(RED)))).toBe("CLIPGUARD_E_REDIS");
    expect(await codeOf(client.getVerdict("x"))).toBe("CLIPGUARD_E_REDIS");
    expect(await codeOf(client.ping())).toBe("CLIPGUARD_E_REDIS");
    // refused connections are reported, not waited out until connectTimeoutMs
    expect(Date.now() - started).toBeLessThan(20_000);
  });
});

describe("ModerationClient with a worker", () => {
  const ns = testNamespace();
  let worker: WorkerProcess;
  let client: ModerationClient;
  let images: http.Server;
  let imagesUrl: string;

  beforeAll(async () => {
    worker = await startWorker({
      REDIS_URL: redisUrl,
      CLIPGUARD_QUEUE: ns,
      CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`,
      CLIPGUARD_ALLOW_PRIVATE_URLS: "true",
    });
    client = new ModerationClient({ redis: redisUrl, queue: ns, verdictStream: `${ns}:verdicts` });
    const red = await fs.readFile(RED_POSTER);
    images = http.createServer((req, res) => {
      if (req.url === "/red.png") res.writeHead(200, { "content-type": "image/png" }).end(red);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => images.listen(0, "127.0.0.1", resolve));
    imagesUrl = `http://127.0.0.1:${(images.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await client?.close();
    await worker?.stop();
    images?.close();
    await cleanupNamespace(redis, ns);
  });

  it("judges every input kind: file path, Buffer, base64, URL", async () => {
    const red = await fs.readFile(RED_POSTER);
    const inputs = [RED_POSTER, red, { base64: red.toString("base64") }, `${imagesUrl}/red.png`, { url: `${imagesUrl}/red.png` }];
    const verdicts = await Promise.all(inputs.map((input, i) => client.enqueueAndWait(input, { imageId: `red-${i}`, metadata: { i } }, { timeoutMs: 30_000 })));
    for (const [i, verdict] of verdicts.entries()) {
      expect(verdict).toMatchObject({ imageId: `red-${i}`, decision: "block", metadata: { i } });
      expect(verdict.policies.find((p) => p.id === "mostly_red")?.decision).toBe("block");
    }
    // the same image gives the same scores whichever way it travelled
    expect(new Set(verdicts.map((v) => JSON.stringify(v.policies))).size).toBe(1);
  });

  it("moderates a large file through a ref and the ref key is gone afterwards", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "noise.png");
    await fs.writeFile(file, await noisePng(400));
    const jobId = await client.enqueue(file, { imageId: "big" });
    const queue = new Queue<JobData>(ns, { connection: redis });
    const ref = ((await queue.getJob(jobId))?.data.image as { ref?: string }).ref;
    await queue.close();
    expect(ref).toMatch(/^clipguard:ref:/);
    const verdict = await client.waitForVerdict(jobId, { timeoutMs: 30_000 });
    expect(verdict).toMatchObject({ jobId, imageId: "big" });
    expect(["allow", "review", "block"]).toContain(verdict?.decision);
    // the worker deletes the ref after publishing (and after the webhook, if any): once the job completes
    expect(await untilState(client, jobId, "completed")).toBe("completed");
    expect(await redis.exists(ref as string)).toBe(0);
    await fs.rm(dir, { recursive: true });
  });

  it("returns the error verdict of a job that failed as unrecoverable", async () => {
    const verdict = await client.enqueueAndWait(Buffer.from("this is not an image"), { imageId: "junk" }, { timeoutMs: 30_000 });
    expect(verdict).toMatchObject({ imageId: "junk", decision: "error", error: { code: "CLIPGUARD_E_IMAGE_FORMAT" } });
    expect(await untilState(client, verdict.jobId, "failed")).toBe("failed");
    expect(await client.getStatus(verdict.jobId)).toMatchObject({ state: "failed", verdict });
  });

  it("resubmission with the same jobId gives one job and one verdict", async () => {
    const red = await fs.readFile(RED_POSTER);
    const jobId = `idem-${Date.now()}`;
    const [a, b] = await Promise.all([client.enqueue(red, { jobId }), client.enqueue(RED_POSTER, { jobId })]);
    expect(a).toBe(jobId);
    expect(b).toBe(jobId);
    const verdict = await client.waitForVerdict(jobId, { timeoutMs: 30_000 });
    expect(verdict?.decision).toBe("block");
    // after the verdict: still the same job, nothing new to process
    expect(await client.enqueue(red, { jobId })).toBe(jobId);
    expect(await client.getVerdict(jobId)).toEqual(verdict);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const entries = (await client.readVerdicts("0", { count: 10_000 })).filter((e) => e.jobId === jobId);
    expect(entries).toHaveLength(1);
  });
});
