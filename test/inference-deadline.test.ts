/**
 * The inference deadline (CLIPGUARD_INFERENCE_TIMEOUT_MS): a run past it fails with
 * CLIPGUARD_E_INFERENCE_TIMEOUT, its thread is replaced and the pool keeps serving; in a worker, a
 * job whose run passes it on every attempt ends with one error verdict and the worker stays up.
 *
 * The runs are real: the tiny CLIP model with an image tower made deliberately expensive (wide and
 * deep at 64 patches per image), so that one image takes milliseconds and 64 images in one run
 * take over a second, far apart on either side of the deadlines below.
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InferencePool, type ThreadLoss } from "../src/clip/inference-pool.js";
import { isClipguardError } from "../src/shared/errors.js";
import type { JobVerdict } from "../src/shared/job-schema.js";
import { buildVisionModel, createClipWeights } from "../tools/onnx/clip-architecture.js";
import { colourPolicies, solidPng, tempDir } from "./support/fixtures.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { TINY_CLIP, TINY_IMAGE_SIZE, writeTinyClipModel } from "./support/tiny-clip-model.js";
import { startWorker, type WorkerProcess } from "./support/worker-process.js";

const SLOW_VISION = { ...TINY_CLIP, vision: { imageSize: TINY_IMAGE_SIZE, patchSize: 4, width: 256, layers: 12, heads: 4, mlpDim: 1024 } };
/** Images in the run that must pass the deadline (~1.3 s on one core of the reference machine). */
const SLOW_COUNT = 64;
const DEADLINE_MS = 400;

/** The tiny model with the expensive image tower (same embedding size, so text and images still meet). */
async function writeSlowModel(): Promise<string> {
  const dir = await tempDir("clipguard-slow-model-");
  await writeTinyClipModel(dir);
  await writeFile(path.join(dir, "onnx", "vision_model.onnx"), buildVisionModel(createClipWeights(SLOW_VISION, 4242)));
  return dir;
}

const pixels = (count: number, value = 0.25) => new Float32Array(count * 3 * TINY_IMAGE_SIZE * TINY_IMAGE_SIZE).fill(value);

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "resolved";
  } catch (err) {
    return isClipguardError(err) ? err.code : `not a ClipguardError: ${String(err)}`;
  }
}

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let modelDir: string;

beforeAll(async () => {
  modelDir = await writeSlowModel();
});

describe("inference pool deadline", () => {
  it("fails a run past the deadline with CLIPGUARD_E_INFERENCE_TIMEOUT, replaces its thread, and serves the queued and the next requests", async () => {
    const reference = await InferencePool.start({ modelDir, timeoutMs: 0 });
    const [expected] = await reference.embedPixels(pixels(1), 1);
    await reference.close();

    const replaced: ThreadLoss[] = [];
    const pool = await InferencePool.start({ modelDir, timeoutMs: DEADLINE_MS, onThreadReplaced: (reason) => replaced.push(reason) });
    try {
      const slow = codeOf(pool.embedPixels(pixels(SLOW_COUNT), SLOW_COUNT));
      // queued behind the slow run on the only thread: must wait for the replacement, not fail
      const queued = pool.embedPixels(pixels(1), 1);
      expect(await slow).toBe("CLIPGUARD_E_INFERENCE_TIMEOUT");
      expect(replaced).toEqual(["timeout"]);
      expect(pool.counters.threadsReplaced).toBe(1);

      const [fromQueue] = await queued;
      const [next] = await pool.embedPixels(pixels(1), 1);
      for (const embedding of [fromQueue!, next!]) {
        expect(embedding).toHaveLength(expected!.length);
        embedding.forEach((v, i) => expect(v).toBeCloseTo(expected![i]!, 5));
      }
      expect(await pool.embedTexts(["a red picture"])).toHaveLength(1);
      expect(pool.liveThreads).toBe(1);
      expect(replaced).toEqual(["timeout"]);
    } finally {
      await pool.close();
    }
  });

  it("closes while a thread is still inside a run without aborting the process, and fails what was queued", async () => {
    const pool = await InferencePool.start({ modelDir, timeoutMs: DEADLINE_MS });
    const slow = codeOf(pool.embedPixels(pixels(SLOW_COUNT), SLOW_COUNT));
    const queued = codeOf(pool.embedPixels(pixels(2), 2));
    await new Promise((r) => setTimeout(r, 50));
    // terminating a thread inside a native ONNX Runtime run aborts the process (SIGABRT) when the
    // run returns: close() must wait for the run instead, and this test process must survive it
    await pool.close();
    expect(await queued).toBe("CLIPGUARD_E_SHUTDOWN");
    expect(["resolved", "CLIPGUARD_E_INFERENCE_TIMEOUT"]).toContain(await slow);
    expect(await codeOf(pool.embedTexts(["after close"]))).toBe("CLIPGUARD_E_SHUTDOWN");
  });
});

/**
 * A GIF of `count` distinct random-coloured frames; each frame is one crop of the run
 * (CLIPGUARD_FRAMES_MAX=count). Random, so that no embedding cached in Redis by an earlier run
 * answers for it.
 */
async function animation(count: number): Promise<Buffer> {
  const colours = randomBytes(count * 3);
  const frames = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      sharp({ create: { width: 40, height: 30, channels: 3, background: { r: colours[3 * i]!, g: colours[3 * i + 1]!, b: colours[3 * i + 2]! } } })
        .png()
        .toBuffer(),
    ),
  );
  return sharp(frames, { join: { animated: true } }).gif({ delay: Array<number>(count).fill(100) }).toBuffer();
}

describe("worker with an inference deadline", () => {
  const ns = testNamespace();
  let redis: Redis;
  let queue: Queue;
  let worker: WorkerProcess;

  beforeAll(async () => {
    const url = await testRedisUrl();
    redis = new Redis(url);
    queue = new Queue(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
    const policies = path.join(await tempDir(), "policies.yaml");
    await writeFile(policies, colourPolicies(ns));
    worker = await startWorker({
      REDIS_URL: url,
      CLIPGUARD_QUEUE: ns,
      CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`,
      CLIPGUARD_REVIEW_STREAM: `${ns}:review`,
      CLIPGUARD_POLICIES: policies,
      CLIPGUARD_MODEL_DIR: modelDir,
      CLIPGUARD_ORT_THREADS: "1",
      CLIPGUARD_FRAMES_MAX: String(SLOW_COUNT),
      CLIPGUARD_INFERENCE_TIMEOUT_MS: String(DEADLINE_MS),
    });
  });

  afterAll(async () => {
    await worker?.stop("SIGKILL");
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    await cleanupNamespace(redis, ns);
    redis.disconnect();
  });

  const verdicts = async (jobId: string) =>
    (await redis.xrange(`${ns}:verdicts`, "-", "+")).filter(([, f]) => f[1] === jobId).map(([, f]) => JSON.parse(f[5]!) as JobVerdict);

  it("ends a job that passes the deadline on every attempt with one error verdict, replaces the thread each time, and serves the next job", async () => {
    const gif = (await animation(SLOW_COUNT)).toString("base64");
    const hung = await queue.add("moderate", { image: { base64: gif } }, { attempts: 2, backoff: { type: "fixed", delay: 10 } });
    await until(async () => ((await queue.getJob(hung.id!))?.finishedOn !== undefined ? true : undefined), 60_000, "the hung job to finish");
    const job = await queue.getJob(hung.id!);
    expect(await job!.getState()).toBe("failed");
    expect(job!.attemptsMade).toBe(2);
    const [verdict, ...more] = await verdicts(hung.id!);
    expect(more).toHaveLength(0);
    expect(verdict?.decision).toBe("error");
    expect(verdict?.error?.code).toBe("CLIPGUARD_E_INFERENCE_TIMEOUT");
    expect(await worker.metric("clipguard_inference_thread_restarts_total", { reason: "timeout" })).toBe(2);
    expect(await worker.metric("clipguard_inference_thread_restarts_total", { reason: "exit" })).toBe(0);
    expect(await worker.metric("clipguard_job_failures_total", { code: "CLIPGUARD_E_INFERENCE_TIMEOUT" })).toBe(2);
    expect(worker.logs.filter((l) => l["msg"] === "inference thread replaced")).toHaveLength(2);

    // a colour of its own, so that the replacement thread has to run it (no cached embedding)
    const [r, g, b] = randomBytes(3);
    const normal = await queue.add("moderate", { image: { base64: (await solidPng([r!, g!, b!])).toString("base64") } });
    const served = await until(async () => (await verdicts(normal.id!))[0], 30_000, "the normal job's verdict");
    expect(served.decision).not.toBe("error");
    expect(served.timings.inferenceMs).toBeGreaterThan(0);
    expect(worker.child.exitCode).toBeNull();
  });
});

describe("worker shutdown past the grace period with inference in flight", () => {
  const ns = testNamespace();
  let redis: Redis;
  let queue: Queue;

  beforeAll(async () => {
    const url = await testRedisUrl();
    redis = new Redis(url);
    queue = new Queue(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
  });

  afterAll(async () => {
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    await cleanupNamespace(redis, ns);
    redis.disconnect();
  });

  it("exits 0 when SIGTERM leaves no grace while the image tower is mid-run, and leaves the queued job to another worker instead of failing it", async () => {
    const policies = path.join(await tempDir(), "policies.yaml");
    await writeFile(policies, colourPolicies(ns));
    const env = {
      REDIS_URL: await testRedisUrl(),
      CLIPGUARD_QUEUE: ns,
      CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`,
      CLIPGUARD_REVIEW_STREAM: `${ns}:review`,
      CLIPGUARD_POLICIES: policies,
      CLIPGUARD_MODEL_DIR: modelDir,
      CLIPGUARD_ORT_THREADS: "1",
      CLIPGUARD_FRAMES_MAX: String(SLOW_COUNT),
      CLIPGUARD_CONCURRENCY: "2",
      CLIPGUARD_LOCK_DURATION_MS: "1000",
      CLIPGUARD_STALLED_INTERVAL_MS: "500",
    };
    const verdicts = async (jobId: string) =>
      (await redis.xrange(`${ns}:verdicts`, "-", "+")).filter(([, f]) => f[1] === jobId).map(([, f]) => JSON.parse(f[5]!) as JobVerdict);
    const first = await startWorker({ ...env, CLIPGUARD_SHUTDOWN_GRACE_MS: "0" });
    let second: WorkerProcess | undefined;
    try {
      // two 64-image runs on one thread: one runs, the other waits in the pool's queue; one attempt each
      const jobs = await Promise.all([0, 1].map(async () => queue.add("moderate", { image: { base64: (await animation(SLOW_COUNT)).toString("base64") } }, { attempts: 1 })));
      // the batch-size histogram counts a run when it is handed to the (idle) thread; it then takes over a second
      await until(async () => ((await first.metric("clipguard_inference_batch_size_count")) ?? 0) >= 1 || undefined, 20_000, "the image run to start");
      // terminating the thread inside the run made the process abort (exit 134) once the run returned
      expect(await first.stop("SIGTERM")).toBe(0);
      expect(first.logs.some((l) => l["msg"] === "grace period over; closing with jobs in flight (their locks expire and they are retried)")).toBe(true);
      expect(first.logs.some((l) => l["msg"] === "stopped")).toBe(true);
      // the job whose run never started was neither failed nor given an error verdict (its only attempt)
      for (const job of jobs) {
        expect(await (await queue.getJob(job.id!))!.getState()).not.toBe("failed");
        expect((await verdicts(job.id!)).map((v) => v.decision)).not.toContain("error");
      }

      second = await startWorker(env);
      for (const job of jobs) {
        const found = await until(async () => {
          const list = await verdicts(job.id!);
          return list.length > 0 ? list : undefined;
        }, 60_000, `the verdict of job ${job.id}`);
        expect(found).toHaveLength(1);
        expect(found[0]!.decision).not.toBe("error");
      }
    } finally {
      await Promise.all([first.stop("SIGKILL"), second?.stop("SIGKILL")]);
    }
  });
});
