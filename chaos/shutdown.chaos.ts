/**
 * Scenario 4 of issue 7, shutdown: rolling restarts under load. Each round starts a new worker
 * (ViT-B/32 benchmark model) while the old one works through a full queue, then sends the old one
 * SIGTERM with its jobs in flight and times its exit against CLIPGUARD_SHUTDOWN_GRACE_MS. The lock
 * duration is 5 s and the stalled check runs every 2 s, so a job a worker left behind would be
 * reported stalled within seconds. At the end every job must have exactly one verdict. Then a
 * worker with a short inference deadline gets a job whose run passes it on every attempt: the job
 * must end failed with CLIPGUARD_E_INFERENCE_TIMEOUT, the thread replaced each time, the worker
 * staying up and serving the next job (see support/locks-hung.ts).
 */
import { randomUUID } from "node:crypto";
import { Queue } from "bullmq";
import { afterAll, describe, expect, it } from "vitest";
import { report } from "./support/figures.js";
import { GRACE_CASE_GRACE_MS, runGraceCase } from "./support/locks-grace.js";
import { HUNG_FRAMES, HUNG_TIMEOUT_MS, runHungCase, startHungWorker } from "./support/locks-hung.js";
import { benchSetup, JobLedger, QueueWatch, workerEnv } from "./support/locks-jobs.js";
import { startChaosWorker, type ChaosWorker, type StopResult } from "./support/locks-worker.js";
import { sized } from "./support/profile.js";
import { startRedisServer, type RedisServer } from "./support/redis-server.js";

const ROUNDS = sized({ quick: 3, full: 10 });
const GRACE_MS = 20_000;
/** Jobs waiting at each SIGTERM, so the old worker has a full set (CLIPGUARD_CONCURRENCY 16) in flight. */
const BACKLOG = 32;
/** Attempts of the hung job: every one is a seconds-long run and a model reload. */
const HUNG_ATTEMPTS = sized({ quick: 1, full: 2 });

interface Round {
  stop: StopResult;
  activeAtSigterm: number;
  finishedDuringShutdown: number;
  graceExceeded: boolean;
}

const verdictsLogged = (w: ChaosWorker, after = 0) => w.logs.filter((l) => l["msg"] === "verdict published" && l.receivedAt >= after).length;

describe("4. Shutdown", () => {
  let redis: RedisServer | undefined;
  const workers: ChaosWorker[] = [];
  let ledger: JobLedger | undefined;
  let watch: QueueWatch | undefined;
  const queues: Queue[] = [];
  const sideLedgers: JobLedger[] = [];

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop("SIGKILL")));
    await Promise.all(queues.map((q) => q.close()));
    await watch?.close();
    await Promise.all([ledger, ...sideLedgers].map((l) => l?.close()));
    await redis?.close();
  });

  it("exits within the grace period with jobs in flight, leaves no job stalled, loses no verdict; a hung run is failed and its thread replaced", async (ctx) => {
    const scenarioStarted = Date.now();
    const setup = await benchSetup();
    redis = await startRedisServer();
    const name = `chaos-shutdown-${randomUUID().slice(0, 8)}`;
    const { hostname, port } = new URL(redis.url);
    const openQueue = (queueName: string) => {
      const q = new Queue(queueName, { connection: { host: hostname, port: Number(port) } });
      queues.push(q);
      return q;
    };
    const queue = openQueue(name);
    watch = new QueueWatch(redis.url, name);
    await watch.ready();
    ledger = new JobLedger(redis.url, name, setup);
    const envFor = (queueName: string) =>
      workerEnv(redis!.url, queueName, setup, {
        CLIPGUARD_SHUTDOWN_GRACE_MS: String(GRACE_MS),
        CLIPGUARD_LOCK_DURATION_MS: "5000",
        CLIPGUARD_STALLED_INTERVAL_MS: "2000",
      });
    const env = envFor(name);
    const spawn = async (label: string) => {
      const w = await startChaosWorker(label, env);
      workers.push(w);
      return w;
    };
    const topUp = async () => {
      const waiting = (await queue.getJobCounts("waiting")).waiting ?? 0;
      if (waiting < BACKLOG) await ledger!.enqueue(BACKLOG - waiting);
    };

    let current = await spawn("s0");
    await ledger.enqueue(BACKLOG);
    const rounds: Round[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      const next = await spawn(`s${r}`); // loads while `current` works
      await topUp();
      const since = Date.now();
      // `current` is busy with the new backlog: it has published a verdict since the top-up
      while (verdictsLogged(current, since) === 0 && Date.now() - since < 60_000) await new Promise((res) => setTimeout(res, 100));
      const activeAtSigterm = (await queue.getJobCounts("active")).active ?? 0;
      const sigterm = Date.now();
      const stop = await current.stop("SIGTERM", GRACE_MS + 30_000);
      rounds.push({
        stop,
        activeAtSigterm,
        finishedDuringShutdown: verdictsLogged(current, sigterm),
        graceExceeded: current.logs.some((l) => String(l["msg"]).startsWith("grace period over")),
      });
      current = next;
    }
    // the last worker drains the queue while the past-the-grace case runs on a queue of its own
    const sideLedger = (queueName: string) => {
      const l = new JobLedger(redis!.url, queueName, setup);
      sideLedgers.push(l);
      return l;
    };
    const drain = async () => {
      await ledger!.waitForAll(600_000);
      const stop = await current.stop("SIGTERM", GRACE_MS + 30_000);
      // a job a worker left behind would be found by the last worker's check; give a straggler time
      await new Promise((res) => setTimeout(res, 2000));
      return stop;
    };
    const hungName = `${name}-hung`;
    // the hung case's worker loads its model meanwhile too; its runs start only after the drain
    const hungWorker = startHungWorker(envFor(hungName)).then((w) => {
      workers.push(w);
      return w;
    });
    hungWorker.catch(() => undefined); // awaited below; this only keeps an early failure from going unhandled
    const [drainStop, grace] = await Promise.all([drain(), runGraceCase(redis.url, sideLedger(`${name}-grace`), envFor(`${name}-grace`))]);
    const { verdicts, lost, duplicated } = await ledger.tally();
    const errors = [...verdicts.values()].flat().filter((v) => v.decision === "error").length;
    const stalledLogged = workers.reduce((n, w) => n + w.logs.filter((l) => String(l["msg"]).startsWith("stalled job moved back")).length, 0);
    const stalledInRounds = watch.stalled.length;

    const hung = await runHungCase(await hungWorker, redis.url, sideLedger(hungName), openQueue(hungName), { graceMs: GRACE_MS, attempts: HUNG_ATTEMPTS });

    const stops = [...rounds.map((r) => r.stop), drainStop, grace.stop, hung.stop];
    const peakRssMiB = Math.max(hung.peakRssMiB, ...workers.map((w) => w.peakRssMiB()));
    report(ctx, {
      title: "4. Shutdown",
      method:
        `${ROUNDS} rolling restarts under load: a new worker (ViT-B/32 benchmark model, default concurrency) starts while the old one works, the queue is topped up to ${BACKLOG} waiting jobs, and once the old worker is busy with them it gets SIGTERM with its jobs in flight; CLIPGUARD_SHUTDOWN_GRACE_MS=${GRACE_MS}, lock duration 5 s, stalled check every 2 s. ` +
        `While the last worker drains the queue, a worker on a queue of its own (demo model, CLIPGUARD_SHUTDOWN_GRACE_MS=${GRACE_CASE_GRACE_MS}) gets SIGTERM while its job waits for an image URL that does not answer, and another worker recovers the job. ` +
        `Then a worker with CLIPGUARD_INFERENCE_TIMEOUT_MS=${HUNG_TIMEOUT_MS} and CLIPGUARD_FRAMES_MAX=${HUNG_FRAMES} gets a ${HUNG_FRAMES}-frame GIF (one ${HUNG_FRAMES}-image run, seconds long; ${HUNG_ATTEMPTS} attempt${HUNG_ATTEMPTS > 1 ? "s" : ""}) and then a normal JPEG.`,
      criteria:
        "every SIGTERMed worker exits with status 0 within the grace period; no job stalled or failed for a stall; every job has exactly one verdict; a worker whose job cannot finish in time still exits when the grace period is over (+1 s to close), and the job is retried elsewhere with one verdict; the hung job ends failed with one CLIPGUARD_E_INFERENCE_TIMEOUT error verdict after its attempts, its thread replaced each time, and the same worker then serves the normal job.",
      summary: { jobsRun: ledger.jobIds.length + 3, lost, duplicated, peakRssMiB },
      figures: {
        "SIGTERM rounds with jobs in flight": rounds.length,
        "grace period (ms)": GRACE_MS,
        "max time SIGTERM → exit (ms)": Math.max(...rounds.map((r) => r.stop.ms)),
        "mean time SIGTERM → exit (ms)": rounds.reduce((n, r) => n + r.stop.ms, 0) / rounds.length,
        "exit statuses other than 0": stops.filter((s) => s.code !== 0).length,
        "rounds past the grace period (forced close)": rounds.filter((r) => r.graceExceeded).length,
        "min jobs active at SIGTERM": Math.min(...rounds.map((r) => r.activeAtSigterm)),
        "min jobs finished during a shutdown": Math.min(...rounds.map((r) => r.finishedDuringShutdown)),
        "jobs finished during shutdowns": rounds.reduce((n, r) => n + r.finishedDuringShutdown, 0),
        "stalled jobs (QueueEvents 'stalled', rolling restarts)": stalledInRounds,
        "stalled jobs (workers' stalled-job log lines)": stalledLogged,
        "jobs failed with a stall or lock reason": watch.stallFailures().length,
        "jobs": ledger.jobIds.length,
        "error verdicts (rolling restarts)": errors,
        "drained worker: SIGTERM → exit (ms)": drainStop.ms,
        "job stuck past the grace period: grace (ms)": GRACE_CASE_GRACE_MS,
        "job stuck past the grace period: SIGTERM → exit (ms)": grace.stop.ms,
        "job stuck past the grace period: verdicts after recovery by another worker": grace.verdicts,
        "job stuck past the grace period: SIGTERM → verdict (ms)": grace.recoveredAfterMs,
        "hung job: inference timeout (ms)": HUNG_TIMEOUT_MS,
        "hung job: verdict": `${hung.verdict?.decision ?? "none"} ${hung.verdict?.error?.code ?? ""}`.trim(),
        "hung job: state, attempts": `${hung.state}, ${hung.attemptsMade}`,
        "hung job: enqueue → error verdict (ms)": hung.msToVerdict,
        "hung job: thread restarts (timeout / exit)": `${hung.restartsTimeout} / ${hung.restartsExit}`,
        "next job after the hung one: decision": hung.next?.decision ?? "none",
        "next job after the hung one: enqueue → verdict (ms)": hung.nextMs,
        "hung-case worker: SIGTERM → exit (ms)": hung.stop.ms,
        "peak worker RSS (MiB)": peakRssMiB,
        "scenario run time (s)": (Date.now() - scenarioStarted) / 1000,
      },
      notes: [
        "ONNX Runtime cannot cancel a run, and terminating a worker thread inside one aborts the whole process (SIGABRT) once the run returns: the pool retires a thread whose run passed the deadline, starts a replacement at once and terminates the old one when its run returns. The enqueue → verdict time of the next job includes loading the replacement's model.",
      ],
    });

    for (const round of rounds) {
      expect(round.stop.code).toBe(0);
      expect(round.stop.ms).toBeLessThanOrEqual(GRACE_MS);
      expect(round.graceExceeded).toBe(false);
      expect(round.finishedDuringShutdown).toBeGreaterThan(0);
    }
    expect(drainStop.code).toBe(0);
    expect(stalledInRounds).toBe(0);
    expect(stalledLogged).toBe(0);
    expect(watch.stallFailures()).toEqual([]);
    expect(lost).toBe(0);
    expect(duplicated).toBe(0);
    expect(errors).toBe(0);

    expect(grace.stop.code).toBe(0);
    expect(grace.graceOverLogged).toBe(true);
    expect(grace.stop.ms).toBeLessThanOrEqual(GRACE_CASE_GRACE_MS + 1000);
    expect(grace.verdicts).toBe(1);
    expect(grace.decision).not.toBe("error");

    expect(hung.verdict?.decision).toBe("error");
    expect(hung.verdict?.error?.code).toBe("CLIPGUARD_E_INFERENCE_TIMEOUT");
    expect(hung.state).toBe("failed");
    expect(hung.attemptsMade).toBe(HUNG_ATTEMPTS);
    expect(hung.restartsTimeout).toBe(HUNG_ATTEMPTS);
    expect(hung.replacedLogLines).toBe(HUNG_ATTEMPTS);
    expect(hung.aliveBeforeStop).toBe(true);
    expect(hung.next?.decision).toBeDefined();
    expect(hung.next?.decision).not.toBe("error");
    expect(hung.stop.code).toBe(0);
    expect(hung.stop.ms).toBeLessThanOrEqual(GRACE_MS);
  });
});
