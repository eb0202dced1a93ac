/**
 * 8. API under load: autocannon floods `POST /v1/moderations` of a real `clipguard api` process
 * while two `clipguard worker` processes with the ViT-B/32-sized bench model saturate the CPU.
 * Pass: only 2xx and 429 answers (no other status, no connection error, no timeout), every
 * accepted job gets its verdict, and once the queue has drained Redis holds what it held at the
 * baseline plus only data that is bounded by design (see load-baseline.ts for what that is).
 */
import { randomUUID } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { ModerationClient } from "../src/client/moderation-client.js";
import { startWorker, type WorkerProcess } from "../test/support/worker-process.js";
import { ensureBenchModel } from "../tools/bench-model/bench-model-files.js";
import { report } from "./support/figures.js";
import { startApiProcess, type ApiProcess } from "./support/load-api-process.js";
import { compareToBaseline, measureSettled, PER_JOB_EXPIRING, TOLERANCE_FIXED_BYTES, TOLERANCE_FRACTION, type BaselineComparison, type BoundedStream } from "./support/load-baseline.js";
import { photoJpeg, uniqueJpegBodies, type UniqueJpegBodies } from "./support/load-bodies.js";
import { cpuSeconds, machineCpu, rssMiB } from "./support/load-proc-stats.js";
import { runLoad } from "./support/load-run.js";
import { sized } from "./support/profile.js";
import { startRedisServer, type RedisServer } from "./support/redis-server.js";

const DURATION_S = sized({ quick: 8, full: 30 });
/**
 * The API key's rate limit (per minute) is what the workers judge in BACKLOG_FACTOR × the run time,
 * at the throughput measured before the load: the accepted jobs keep them busy for the whole run
 * on a fast machine and a slow one alike, and the drain after it stays short.
 */
const BACKLOG_FACTOR = 1.25;
/** Unique-image jobs that measure the workers' throughput (and leave the load's mix among the retained jobs). */
const CALIBRATION_JOBS = 24;
const CONNECTIONS = 16;
/** Finished jobs kept (CLIPGUARD_KEEP_COMPLETED/_FAILED) and verdict stream length: small, so warm-up fills them. */
const KEEP = 12;
const STREAM_MAXLEN = 50;
/**
 * Warm-up jobs (one image, so embedding-cache hits: cheap): with the ones after them, enough to fill
 * the verdict stream (MAXLEN ~ keeps up to ~100 entries over the cap); the full profile's also
 * fill BullMQ's event stream (~10,000 events, ~5 per job).
 */
const WARM_UP_JOBS = sized({ quick: 130, full: 3_000 });
const EVENTS_MAXLEN = 10_000;
const DRAIN_TIMEOUT_MS = sized({ quick: 120_000, full: 300_000 });
const PHOTO = path.resolve("examples/images/rocket.jpg");

async function queueDepth(redis: Redis): Promise<number> {
  const [wait, active, delayed, prioritized] = await Promise.all([
    redis.llen("bull:moderation:wait"),
    redis.llen("bull:moderation:active"),
    redis.zcard("bull:moderation:delayed"),
    redis.zcard("bull:moderation:prioritized"),
  ]);
  return wait + active + delayed + prioritized;
}

/** Waits until no job is waiting, active or delayed; returns how long that took and how many jobs are left (0 unless timed out). */
async function drain(redis: Redis, timeoutMs: number): Promise<{ ms: number; left: number }> {
  const started = Date.now();
  for (;;) {
    const left = await queueDepth(redis);
    if (left === 0 || Date.now() - started > timeoutMs) return { ms: Date.now() - started, left };
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function waitForDrain(redis: Redis, timeoutMs: number): Promise<void> {
  const { left } = await drain(redis, timeoutMs);
  if (left > 0) throw new Error(`the queue did not drain within ${timeoutMs} ms (${left} jobs left)`);
}

/** Runs `count` calls of `enqueue(n)`, 32 at a time, then waits for the queue to drain. */
async function warmUp(redis: Redis, count: number, enqueue: (n: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < count) await enqueue(next++);
    }),
  );
  await waitForDrain(redis, DRAIN_TIMEOUT_MS);
}

async function post(url: string, apiKey: string, body: string): Promise<void> {
  const response = await fetch(`${url}/v1/moderations`, { method: "POST", headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" }, body });
  if (response.status !== 202) throw new Error(`warm-up request answered ${response.status}: ${await response.text()}`);
}

/** The load's bodies: 3 of every 4 a small JPEG inline in the job, the 4th a large one stored as a ref. */
function mixed(small: UniqueJpegBodies, large: UniqueJpegBodies) {
  return (n: number, tag: string) => (n % 4 === 3 ? large : small).body(n, tag);
}

async function completedByDecision(workers: WorkerProcess[]): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const worker of workers) {
    for (const decision of ["allow", "review", "block", "error"]) {
      counts[decision] = (counts[decision] ?? 0) + ((await worker.metric("clipguard_jobs_completed_total", { decision })) ?? 0);
    }
  }
  return counts;
}

describe("8. API under load", () => {
  it("answers only 2xx and 429 while workers saturate the CPU, and Redis memory returns to its baseline", async (ctx) => {
    const server: RedisServer = await startRedisServer();
    const redis = new Redis(server.url);
    const workers: WorkerProcess[] = [];
    let api: ApiProcess | undefined;
    let client: ModerationClient | undefined;
    let peakWorkerRss = 0;
    let peakApiRss = 0;
    const sampler = setInterval(() => {
      for (const worker of workers) void rssMiB(worker.child.pid).then((mib) => (peakWorkerRss = Math.max(peakWorkerRss, mib ?? 0)));
      void rssMiB(api?.child.pid).then((mib) => (peakApiRss = Math.max(peakApiRss, mib ?? 0)));
    }, 250);
    try {
      const model = await ensureBenchModel("vit-b-32");
      const apiKey = `load-${randomUUID()}`;
      const warmUpKey = `warm-up-${randomUUID()}`;
      const workerEnv = {
        REDIS_URL: server.url,
        CLIPGUARD_MODEL_DIR: model.dir,
        CLIPGUARD_KEEP_COMPLETED: String(KEEP),
        CLIPGUARD_KEEP_FAILED: String(KEEP),
        CLIPGUARD_VERDICT_STREAM_MAXLEN: String(STREAM_MAXLEN),
        CLIPGUARD_WATCH_POLICIES: "false",
      };
      const startupStarted = Date.now();
      workers.push(...(await Promise.all([startWorker(workerEnv), startWorker(workerEnv)])));
      const startupMs = Date.now() - startupStarted;
      client = new ModerationClient({ redis: server.url, keepCompleted: KEEP, keepFailed: KEEP });
      const producer = client;

      // two bodies: a small JPEG inline in the job (base64) and a large one over the 256 KiB ref threshold
      const small = uniqueJpegBodies(await photoJpeg(PHOTO, 320, 85));
      const large = uniqueJpegBodies(await photoJpeg(PHOTO, 1200, 95));
      expect(large.imageBytes).toBeGreaterThan(256 * 1024);
      const warmUpStarted = Date.now();
      const body = mixed(small, large);
      const imageOf = (json: string) => Buffer.from((JSON.parse(json) as { base64: string }).base64, "base64");
      const warmImage = imageOf(small.body(0, "warm"));
      await warmUp(redis, WARM_UP_JOBS, (n) => producer.enqueue(warmImage, { imageId: `warm-up-${n}` }));
      const calibrationStarted = Date.now();
      await warmUp(redis, CALIBRATION_JOBS, (n) => producer.enqueue(imageOf(body(n, "calibrate")), { imageId: `calibrate-${n}` }));
      const throughput = CALIBRATION_JOBS / ((Date.now() - calibrationStarted) / 1000);
      const rateLimit = Math.max(CONNECTIONS, Math.ceil(throughput * DURATION_S * BACKLOG_FACTOR));
      api = await startApiProcess({ ...workerEnv, CLIPGUARD_API_KEYS: `${apiKey},${warmUpKey}`, CLIPGUARD_API_RATE_LIMIT: String(rateLimit) });
      const apiUrl = api.url;
      // a few requests through the API with another key, so its rate-limit script and counter exist at
      // the baseline too; the load's mix again, images seen before (embedding-cache hits)
      await warmUp(redis, 8, (n) => post(apiUrl, warmUpKey, body(n % 4, "calibrate")));
      const warmUpMs = Date.now() - warmUpStarted;
      const before = await completedByDecision(workers);
      const baseline = await measureSettled(redis);

      const apiRssBaseline = (await rssMiB(api.child.pid)) ?? 0;
      const cpuBefore = await Promise.all(workers.map((w) => cpuSeconds(w.child.pid)));
      const machineBefore = await machineCpu();
      const loadStarted = Date.now();
      const load = await runLoad({ url: api.url, apiKey, connections: CONNECTIONS, durationSeconds: DURATION_S, body: (n) => body(n, "load") });
      const backlog = await queueDepth(redis);
      const cpuAfter = await Promise.all(workers.map((w) => cpuSeconds(w.child.pid)));
      const machineAfter = await machineCpu();
      const machineBusy = (machineAfter.busy - machineBefore.busy) / Math.max(1, machineAfter.total - machineBefore.total);
      const workerCpuShare = (cpuAfter.reduce((a, b) => a + b, 0) - cpuBefore.reduce((a, b) => a + b, 0)) / ((Date.now() - loadStarted) / 1000) / os.cpus().length;
      const drained = await drain(redis, DRAIN_TIMEOUT_MS);
      const after = await completedByDecision(workers);
      const judged = Object.values(after).reduce((a, b) => a + b, 0) - Object.values(before).reduce((a, b) => a + b, 0);
      const markers = await Promise.all(load.acceptedJobIds.map((id) => redis.exists(`clipguard:verdicts:published:${id}`)));
      const lost = markers.filter((m) => m === 0).length;
      const end = await measureSettled(redis);
      const bounded: BoundedStream[] = [
        { key: "bull:moderation:events", maxEntries: EVENTS_MAXLEN },
        { key: "clipguard:verdicts", maxEntries: STREAM_MAXLEN },
        { key: "clipguard:review", maxEntries: STREAM_MAXLEN },
      ];
      const comparison: BaselineComparison = compareToBaseline(baseline, end, load.acceptedJobIds.length, bounded);
      const apiRssAfter = (await rssMiB(api.child.pid)) ?? 0;
      const retained = end.groups.get("bull:moderation:*");
      const retainedKiB = retained === undefined || retained.keys === 0 ? 0 : Math.round(retained.bytes / retained.keys / 1024);

      report(ctx, {
        title: "8. API under load",
        method:
          `autocannon, ${CONNECTIONS} connections for ${DURATION_S} s, against \`POST /v1/moderations\` of a \`clipguard api\` process with one API key, ` +
          `its CLIPGUARD_API_RATE_LIMIT set to what the workers judge in ${BACKLOG_FACTOR} × the run time at the throughput measured just before (${CALIBRATION_JOBS} jobs), so they have work for the whole run; ` +
          "bodies alternating 3:1 between a 320 px JPEG sent inline and a 1200 px one over the 256 KiB ref threshold, every image unique (no embedding-cache hits); " +
          `two \`clipguard worker\` processes with the ViT-B/32-sized bench model saturate the CPU, on a redis-server of the suite's own. ` +
          `The Redis baseline is taken once a warm-up of ${WARM_UP_JOBS + CALIBRATION_JOBS + 8} jobs has drained: it fills the retained finished jobs (CLIPGUARD_KEEP_COMPLETED=KEEP_FAILED=${KEEP}) and the verdict stream (CLIPGUARD_VERDICT_STREAM_MAXLEN=${STREAM_MAXLEN})${WARM_UP_JOBS >= 2_500 ? " and BullMQ's event stream" : ""}.`,
        criteria:
          "only 2xx and 429 responses (any other status, connection error or timeout fails); jobs still queued when the load ends (the workers had work throughout); every accepted job gets a verdict; " +
          "after the drain, Redis `used_memory` minus the baseline, less the per-job keys that expire by design " +
          `(${PER_JOB_EXPIRING.join(", ")}) and the growth of streams still under their length caps (BullMQ events ${EVENTS_MAXLEN}, verdict and review streams ${STREAM_MAXLEN}), ` +
          `is within ${TOLERANCE_FIXED_BYTES / 1024} KiB + ${TOLERANCE_FRACTION * 100} % of the baseline; no key without a TTL is added per job; no \`clipguard:ref:\` key is left.`,
        summary: { jobsRun: load.acceptedJobIds.length, lost, peakRssMiB: Math.round(peakWorkerRss) },
        figures: {
          "workers' throughput before the load (jobs/s)": Math.round(throughput * 10) / 10,
          "rate limit (requests/min)": rateLimit,
          "requests sent": load.requests,
          "requests/s": Math.round(load.requestsPerSecond),
          "accepted (202)": load.statuses["202"] ?? 0,
          "rate-limited (429)": load.statuses["429"] ?? 0,
          "other statuses": load.unexpected,
          "connection errors": load.errors,
          timeouts: load.timeouts,
          "latency p50, all (ms)": load.latency.all.p50,
          "latency p99, all (ms)": load.latency.all.p99,
          "latency p50, accepted (ms)": load.latency.accepted.p50,
          "latency p99, accepted (ms)": load.latency.accepted.p99,
          "latency max, accepted (ms)": load.latency.accepted.max,
          "latency p99, 429 (ms)": load.latency.limited.p99,
          "machine CPU busy during the load (%)": Math.round(machineBusy * 100),
          "worker CPU during the load (% of all cores)": Math.round(workerCpuShare * 100),
          "jobs queued when the load ended": backlog,
          "jobs judged during the run and drain": judged,
          "error verdicts": (after["error"] ?? 0) - (before["error"] ?? 0),
          "drain after the load (s)": Math.round(drained.ms / 100) / 10,
          "jobs left in the queue after the drain": drained.left,
          "workers ready (s)": Math.round(startupMs / 100) / 10,
          "warm-up (s)": Math.round(warmUpMs / 100) / 10,
          "Redis used_memory, baseline (KiB)": Math.round(baseline.usedMemory / 1024),
          "Redis used_memory, after the drain (KiB)": Math.round(end.usedMemory / 1024),
          "per-job keys that expire by design (KiB)": Math.round(comparison.expiringBytes / 1024),
          "per accepted job, expiring by design (bytes)": Math.round(comparison.expiringBytesPerJob),
          "growth of count-bounded streams (KiB)": Math.round(comparison.boundedBytes / 1024),
          "residual over the baseline (KiB)": Math.round(comparison.residual / 1024),
          "residual tolerance (KiB)": Math.round(comparison.tolerance / 1024),
          "per-job keys without TTL left": comparison.unboundedKeys,
          "ref keys left": comparison.refKeys,
          "peak worker RSS (MiB)": Math.round(peakWorkerRss),
          "peak API RSS (MiB)": Math.round(peakApiRss),
          "API RSS at the baseline (MiB)": Math.round(apiRssBaseline),
          "API RSS after the drain (MiB)": Math.round(apiRssAfter),
          "retained finished jobs": retained?.keys ?? 0,
          "retained finished job, mean (KiB)": retainedKiB,
        },
        notes: [
          ...comparison.notes,
          `A finished job keeps its job data until CLIPGUARD_KEEP_COMPLETED/_FAILED trims it, an inline base64 image included (here ${retained?.keys ?? 0} retained jobs, mean ${retainedKiB} KiB, with 3 of 4 images inline): ` +
            "with the defaults (1,000 completed, 5,000 failed jobs kept) and inline images up to the 256 KiB ref threshold (~342 KiB as base64), that is up to ~2 GiB of Redis memory.",
          ...(load.unexpectedCodes.length > 0 ? [`unexpected answers: ${load.unexpectedCodes.join(", ")}`] : [])],
      });

      expect(load.unexpected, `unexpected statuses: ${JSON.stringify(load.statuses)} ${load.unexpectedCodes.join(", ")}`).toBe(0);
      expect(load.errors).toBe(0);
      expect(load.timeouts).toBe(0);
      expect(load.acceptedJobIds.length).toBeGreaterThan(0);
      expect(load.statuses["429"] ?? 0).toBeGreaterThan(0);
      // the experiment's premise: the workers had work for the whole run
      expect(backlog, "the workers ran out of work before the load ended").toBeGreaterThan(0);
      expect(drained.left).toBe(0);
      expect(lost).toBe(0);
      expect(comparison.refKeys).toBe(0);
      expect(comparison.overCap).toEqual([]);
      expect(comparison.unboundedKeys, comparison.notes.join("; ")).toBe(0);
      expect(comparison.residual, comparison.notes.join("; ")).toBeLessThanOrEqual(comparison.tolerance);
    } finally {
      clearInterval(sampler);
      await client?.close();
      await api?.stop();
      await Promise.all(workers.map((w) => w.stop()));
      redis.disconnect();
      await server.close();
    }
  });
});
