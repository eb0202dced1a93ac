/**
 * Scenario 2 (issue 7), Redis restart: a producer keeps enqueueing and two workers keep
 * consuming while the suite's own Redis (AOF, appendfsync everysec) is restarted three times —
 * twice cleanly (SIGTERM: Redis writes its AOF) and once as a crash (SIGKILL: up to a second of
 * writes may be gone). Workers must consume again within 30 s each time; every job acknowledged
 * to the producer before a restart window must get its verdict; nothing may be duplicated.
 */
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { ModerationClient } from "../src/client/moderation-client.js";
import { toErrorInfo } from "../src/shared/errors.js";
import { colourPolicies, tempDir } from "../test/support/fixtures.js";
import { report } from "./support/figures.js";
import { lostAndDuplicated, runCounters, tallyStream, uniquePngs } from "./support/fleet-ledger.js";
import { sleep, startFleet, until, type Fleet } from "./support/fleet-workers.js";
import { sized } from "./support/profile.js";
import { startRedisServer, type RedisServer } from "./support/redis-server.js";

/** Clean, clean, crash. */
const RESTARTS: NodeJS.Signals[] = ["SIGTERM", "SIGTERM", "SIGKILL"];
/** Longer than the workers' 3 s lock: locks of jobs in flight expire while Redis is down. */
const DOWN_MS = sized({ quick: 4_000, full: 8_000 });
/** Time between Redis being back and the next restart, once the workers consume again. */
const RUN_MS = sized({ quick: 4_000, full: 20_000 });
const ENQUEUES_PER_S = 20;
/** appendfsync everysec may lose the last second before a crash: a crash's window opens this much earlier. */
const CRASH_MARGIN_MS = 2_000;
const RECOVERY_BOUND_MS = 30_000;
const WAIT_MS = 60_000;

interface Enqueue {
  id: string;
  sentAt: number;
  ackAt?: number;
  failedAt?: number;
  code?: string;
  /** How the producer's waitForVerdict for this job ended: "verdict", "timeout" or an error code. */
  waited?: Promise<string>;
}

describe("chaos: redis restart", () => {
  let server: RedisServer | undefined;
  let fleet: Fleet | undefined;
  let client: ModerationClient | undefined;
  let probe: Redis | undefined;

  afterAll(async () => {
    await fleet?.close(5_000);
    await client?.close();
    probe?.disconnect();
    await server?.close();
  });

  it("2. Redis restart: workers and producers recover; no acknowledged job is lost", async (ctx) => {
    server = await startRedisServer({ aof: true });
    const ns = `chaos-redis-${randomUUID().slice(0, 8)}`;
    const stream = `${ns}:verdicts`;
    const policies = path.join(await tempDir("clipguard-chaos-redis-"), "policies.yaml");
    await fs.writeFile(policies, colourPolicies(ns));
    const images = await uniquePngs(sized({ quick: 800, full: 4000 }));
    fleet = await startFleet({
      size: 2,
      env: {
        REDIS_URL: server.url,
        CLIPGUARD_QUEUE: ns,
        CLIPGUARD_VERDICT_STREAM: stream,
        CLIPGUARD_MODEL_DIR: path.resolve("models/demo"),
        CLIPGUARD_POLICIES: policies,
        CLIPGUARD_WATCH_POLICIES: "false",
        CLIPGUARD_ORT_THREADS: "1",
        CLIPGUARD_LOCK_DURATION_MS: "3000",
        CLIPGUARD_STALLED_INTERVAL_MS: "1000",
      },
    });
    const redisErrors: string[] = [];
    client = new ModerationClient({
      redis: server.url,
      queue: ns,
      verdictStream: stream,
      keepCompleted: 100_000,
      keepFailed: 100_000,
      backoffDelayMs: 200,
      onRedisError: (err) => redisErrors.push(toErrorInfo(err).code),
    });
    probe = new Redis(server.url, { maxRetriesPerRequest: null });
    probe.on("error", () => undefined);

    // the producer: one enqueue every 1/ENQUEUES_PER_S s, each on its own, whatever Redis is doing
    const enqueues: Enqueue[] = [];
    let producing = true;
    const inFlight = new Set<Promise<void>>();
    const producer = (async () => {
      for (let i = 0; producing; i++) {
        const record: Enqueue = { id: `job-${i}`, sentAt: Date.now() };
        enqueues.push(record);
        const pending = client!.enqueue(images[i % images.length]!, { jobId: record.id, imageId: `img-${i}` }).then(
          () => {
            record.ackAt = Date.now();
            // a producer that waits for its verdicts, through the restarts (the client's stream watcher)
            record.waited = client!.waitForVerdict(record.id, { timeoutMs: WAIT_MS }).then(
              (verdict) => (verdict === undefined ? "timeout" : "verdict"),
              (err: unknown) => toErrorInfo(err).code,
            );
          },
          (err: unknown) => {
            record.failedAt = Date.now();
            record.code = toErrorInfo(err).code;
          },
        );
        inFlight.add(pending);
        void pending.finally(() => inFlight.delete(pending));
        await sleep(1000 / ENQUEUES_PER_S);
      }
    })();

    const windows: {
      signal: NodeJS.Signals;
      opensAt: number;
      stoppedAt: number;
      backAt: number;
      recoveryMs: number | undefined;
      readyMs: number | undefined;
      readyDuring: number;
    }[] = [];
    const readiness = async () =>
      Promise.all(
        fleet!.slots.map(async (w) => (w === undefined ? 0 : (await fetch(`http://127.0.0.1:${w.metricsPort}/readyz`).catch(() => undefined))?.status ?? 0)),
      );
    const allReadyAfter = async (t: number) =>
      until(async () => ((await readiness()).every((status) => status === 200) ? Date.now() - t : undefined), RECOVERY_BOUND_MS * 2, "readiness", 50).catch(
        () => undefined,
      );
    const nextVerdictAfter = async (t: number) =>
      until(
        async () => {
          const last = await probe!.xrevrange(stream, "+", "-", "COUNT", 1).catch(() => []);
          const ms = Number(last[0]?.[0].split("-")[0] ?? 0);
          return ms >= t ? ms : undefined;
        },
        RECOVERY_BOUND_MS * 2,
        "a verdict after the restart",
        50,
      ).catch(() => undefined);

    await sleep(RUN_MS);
    for (const signal of RESTARTS) {
      const stoppedAt = Date.now();
      await server.stopServer(signal);
      await sleep(DOWN_MS / 2);
      // while Redis is away the workers must say they are not ready (and stay alive)
      const readyDuring = Math.max(...(await readiness()));
      await sleep(DOWN_MS / 2);
      await server.start();
      const backAt = Date.now();
      const [next, readyMs] = await Promise.all([nextVerdictAfter(backAt), allReadyAfter(backAt)]);
      const opensAt = signal === "SIGKILL" ? stoppedAt - CRASH_MARGIN_MS : stoppedAt;
      windows.push({ signal, opensAt, stoppedAt, backAt, recoveryMs: next === undefined ? undefined : next - backAt, readyMs, readyDuring });
      await sleep(RUN_MS);
    }
    producing = false;
    await producer;
    const pendingAtStop = inFlight.size;
    await Promise.race([Promise.allSettled([...inFlight]), sleep(15_000)]);
    const hanging = inFlight.size;

    const inWindow = (t: number) => windows.some((w) => t >= w.opensAt && t <= w.backAt);
    const acked = enqueues.filter((e) => e.ackAt !== undefined);
    const mustHave = acked.filter((e) => !inWindow(e.ackAt!)).map((e) => e.id);
    const drained = await until(
      async () => {
        const tally = await tallyStream(probe!, stream);
        return mustHave.every((id) => tally.counts.has(id)) ? true : undefined;
      },
      120_000,
      "a verdict for every acknowledged job",
      500,
    ).catch(() => false);
    await sleep(3_000 + 3 * 1_000);
    const died = fleet.slots.filter((w) => w === undefined || w.child.exitCode !== null || w.child.signalCode !== null).length;
    const ready = await readiness();
    const waits = new Map<string, number>();
    const waitOutcome = new Map<string, string>();
    for (const e of acked) {
      const outcome = await (e.waited ?? Promise.resolve("none"));
      waitOutcome.set(e.id, outcome);
      waits.set(outcome, (waits.get(outcome) ?? 0) + 1);
    }
    const mustHaveUnanswered = mustHave.filter((id) => waitOutcome.get(id) !== "verdict");
    // the producer is back once an enqueue sent after Redis answered again is acknowledged
    const producerBackMs = windows.map((w) => {
      const first = enqueues.find((e) => e.sentAt >= w.backAt && e.ackAt !== undefined);
      return first === undefined ? Number.POSITIVE_INFINITY : first.ackAt! - w.backAt;
    });
    const workerErrors = fleet.logs().filter((l) => l["msg"] === "worker error").length;
    const clientPing = await client.ping().then(
      () => "ok",
      (err: unknown) => toErrorInfo(err).code,
    );
    const exitCodes = await fleet.close();

    const tally = await tallyStream(probe, stream);
    const { lost } = lostAndDuplicated(mustHave, tally);
    const duplicated = [...tally.counts.entries()].filter(([, n]) => n > 1).map(([id]) => id);
    const failed = enqueues.filter((e) => e.failedAt !== undefined);
    const failedButRun = failed.filter((e) => tally.counts.has(e.id)).length;
    const ackedInWindowLost = acked.filter((e) => inWindow(e.ackAt!) && !tally.counts.has(e.id)).length;
    const codes = new Map<string, number>();
    for (const e of failed) codes.set(e.code ?? "?", (codes.get(e.code ?? "?") ?? 0) + 1);
    const runs = await runCounters(probe, "bull", ns, acked.map((e) => e.id));
    const recoveries = windows.map((w) => w.recoveryMs ?? Number.POSITIVE_INFINITY);
    const worstRecovery = Math.max(...recoveries);
    const peakRssMiB = Math.round((fleet.peakRssBytes() / 2 ** 20) * 10) / 10;
    const ackLatency = acked.map((e) => e.ackAt! - e.sentAt);

    report(ctx, {
      title: "2. Redis restart",
      method:
        `A producer enqueued ${ENQUEUES_PER_S} jobs/s (unique PNGs, ModerationClient) into 2 \`clipguard worker\` processes while the suite's own Redis ` +
        `(AOF, appendfsync everysec) was restarted ${RESTARTS.length} times, ${DOWN_MS / 1000} s down each time: ${RESTARTS.join(", ")} ` +
        `(SIGTERM: a clean shutdown that writes the AOF; SIGKILL: a crash). The producer also waited for each acknowledged job's verdict ` +
        `(ModerationClient.waitForVerdict, ${WAIT_MS / 1000} s). Workers ran with a 3 s lock (CLIPGUARD_LOCK_DURATION_MS=3000, ` +
        `CLIPGUARD_STALLED_INTERVAL_MS=1000), shorter than the outage. Recovery is the time from Redis answering again to the next verdict in the stream.`,
      criteria:
        `workers consume again within ${RECOVERY_BOUND_MS / 1000} s of every restart; every job acknowledged to the producer before a restart window ` +
        `(from the stop, or ${CRASH_MARGIN_MS / 1000} s before a crash, to Redis answering again) has its verdict, and the producer's wait for it got it; ` +
        `no job has two stream entries; no worker process dies; workers report not-ready (503) while Redis is away and ready again within ${RECOVERY_BOUND_MS / 1000} s.`,
      summary: { jobsRun: acked.length, redisRestarts: windows.length, lost: lost.length, duplicated: duplicated.length, peakRssMiB },
      figures: {
        "Redis restarts": windows.length,
        "down time per restart (s)": DOWN_MS / 1000,
        ...Object.fromEntries(windows.map((w, i) => [`restart ${i + 1} (${w.signal}): back to next verdict (ms)`, w.recoveryMs ?? "none"])),
        "worst recovery (ms)": Number.isFinite(worstRecovery) ? worstRecovery : "none",
        "worst time from Redis back to every worker ready (ms)": Math.max(...windows.map((w) => w.readyMs ?? Number.POSITIVE_INFINITY)),
        "worst time from Redis back to the producer's next acknowledged enqueue (ms)": Math.max(...producerBackMs),
        "readiness status while Redis was down (highest seen)": Math.max(...windows.map((w) => w.readyDuring)),
        "enqueues tried": enqueues.length,
        "enqueues acknowledged": acked.length,
        "enqueues failed during restarts": failed.length,
        ...Object.fromEntries([...codes].map(([code, n]) => [`enqueue failures with ${code}`, n])),
        "failed enqueues whose job ran anyway": failedButRun,
        "enqueues still pending when the producer stopped": pendingAtStop,
        "enqueues never settled (15 s after the producer stopped)": hanging,
        "slowest acknowledged enqueue (ms)": Math.max(0, ...ackLatency),
        "acknowledged jobs that must have a verdict": mustHave.length,
        "jobs lost": lost.length,
        "jobs acknowledged inside a crash window without a verdict": ackedInWindowLost,
        "jobs with duplicated stream entries": duplicated.length,
        "jobs re-run (BullMQ ats > 1)": runs.rerunJobs,
        "stalled detections (BullMQ stc)": runs.stalls,
        "jobs in BullMQ's failed set": runs.failed.length,
        "worker processes that died": died,
        "worker error log lines (BullMQ connection errors)": workerErrors,
        ...Object.fromEntries([...waits].map(([outcome, n]) => [`producer waits for a verdict ending in ${outcome}`, n])),
        "jobs acknowledged before a window whose producer wait did not get the verdict": mustHaveUnanswered.length,
        "client Redis errors reported": redisErrors.length,
        "peak worker RSS (MiB)": peakRssMiB,
      },
      notes: [`readiness after the run: ${ready.join(", ")}; client ping: ${clientPing}; worker exit codes on SIGTERM: ${exitCodes.join(", ")}`],
    });

    for (const w of windows) expect(w.recoveryMs, `recovery after the ${w.signal} restart`).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
    expect(drained, "every acknowledged job got its verdict within 120 s").toBe(true);
    expect(lost).toEqual([]);
    expect(duplicated).toEqual([]);
    expect(died).toBe(0);
    for (const w of windows) expect(w.readyDuring, "readiness while Redis is down").toBe(503);
    for (const w of windows) expect(w.readyMs, "readiness after Redis is back").toBeLessThanOrEqual(RECOVERY_BOUND_MS);
    for (const ms of producerBackMs) expect(ms, "producer enqueueing again after Redis is back").toBeLessThanOrEqual(RECOVERY_BOUND_MS);
    expect(mustHaveUnanswered, "producer waits (waitForVerdict) that did not get their verdict").toEqual([]);
    expect(ready).toEqual([200, 200]);
    expect(clientPing).toBe("ok");
    expect(hanging).toBe(0);
    expect(exitCodes.every((code) => code === 0)).toBe(true);
  });
});
