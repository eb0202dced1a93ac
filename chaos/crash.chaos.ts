/**
 * Scenario 1 (issue 7), Crash: jobs with callbacks flow through two worker processes while a
 * random one is SIGKILLed and restarted again and again. Every job must end with exactly one
 * verdict-stream entry and at least one signed webhook, repeats carrying the same webhook-id.
 */
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { ModerationClient } from "../src/client/moderation-client.js";
import { colourPolicies, tempDir } from "../test/support/fixtures.js";
import { report } from "./support/figures.js";
import { lostAndDuplicated, runCounters, tallyStream, uniquePngs } from "./support/fleet-ledger.js";
import { startWebhookReceiver, type WebhookReceiver } from "./support/fleet-webhooks.js";
import { countLogsByJob, sleep, startFleet, until, type Fleet } from "./support/fleet-workers.js";
import { sized } from "./support/profile.js";
import { startRedisServer, type RedisServer } from "./support/redis-server.js";

const SECRET = "whsec_" + Buffer.from("clipguard-chaos-crash-secret-0001").toString("base64");
const JOBS = sized({ quick: 200, full: 1000 });
const KILLS = sized({ quick: 5, full: 20 });
/** The producer spreads its jobs over this long; the kills are spread over the same span. */
const PRODUCE_MS = sized({ quick: 20_000, full: 90_000 });
const LOCK_MS = 3000;
const STALLED_MS = 1000;
/** The receiver answers after 0–400 ms, as a real one might: jobs stay in flight meanwhile. */
const RECEIVER_DELAY_MS = 400;

/** A small seeded PRNG (mulberry32), so a run's kill order can be replayed from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("chaos: crash", () => {
  let server: RedisServer | undefined;
  let receiver: WebhookReceiver | undefined;
  let fleet: Fleet | undefined;
  let client: ModerationClient | undefined;
  let redis: Redis | undefined;

  afterAll(async () => {
    await fleet?.close(5_000);
    await client?.close();
    redis?.disconnect();
    await receiver?.close();
    await server?.close();
  });

  it("1. Crash: SIGKILLed workers lose no job and publish no verdict twice", async (ctx) => {
    server = await startRedisServer();
    receiver = await startWebhookReceiver({ secret: SECRET, delayMs: () => Math.random() * RECEIVER_DELAY_MS });
    const ns = `chaos-crash-${randomUUID().slice(0, 8)}`;
    const stream = `${ns}:verdicts`;
    const policies = path.join(await tempDir("clipguard-chaos-crash-"), "policies.yaml");
    await fs.writeFile(policies, colourPolicies(ns));
    const images = await uniquePngs(JOBS);
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
        CLIPGUARD_WEBHOOK_SECRET: SECRET,
        // the receiver is on loopback: allow exactly that address, not every private range
        CLIPGUARD_ALLOWED_HOSTS: "127.0.0.1",
        CLIPGUARD_LOCK_DURATION_MS: String(LOCK_MS),
        CLIPGUARD_STALLED_INTERVAL_MS: String(STALLED_MS),
      },
    });
    client = new ModerationClient({ redis: server.url, queue: ns, verdictStream: stream, keepCompleted: 100_000, keepFailed: 100_000, backoffDelayMs: 200 });
    redis = new Redis(server.url);

    const seed = Date.now() % 2 ** 31;
    const random = prng(seed);
    const ids: string[] = [];
    const restartMs: number[] = [];
    const t0 = Date.now();
    const producer = (async () => {
      for (let i = 0; i < JOBS; i++) {
        ids.push(await client!.enqueue(images[i]!, { imageId: `img-${i}`, callbackUrl: receiver!.url }));
        await sleep(t0 + ((i + 1) * PRODUCE_MS) / JOBS - Date.now());
      }
    })();
    const killer = (async () => {
      for (let k = 0; k < KILLS; k++) {
        await sleep(t0 + ((k + 0.5) * PRODUCE_MS) / KILLS - Date.now());
        const slot = random() < 0.5 ? 0 : 1;
        await fleet!.kill(slot);
        restartMs.push(await fleet!.start(slot));
      }
    })();
    await Promise.all([producer, killer]);
    const producedMs = Date.now() - t0;

    const everyone = new Set(ids);
    const drained = await until(
      async () => {
        const tally = await tallyStream(redis!, stream);
        const hooks = receiver!.countsById();
        return ids.every((id) => tally.counts.has(id) && hooks.has(id)) ? true : undefined;
      },
      120_000,
      "a verdict and a webhook for every job",
      500,
    ).catch(() => false);
    const drainMs = Date.now() - t0 - producedMs;
    // late re-runs would show up as second entries: give the stalled checker a few more rounds
    await sleep(LOCK_MS + 3 * STALLED_MS);
    const exitCodes = await fleet.close();

    const tally = await tallyStream(redis, stream);
    const { lost, duplicated } = lostAndDuplicated(ids, tally);
    const strangers = [...tally.counts.keys()].filter((id) => !everyone.has(id));
    const hooks = receiver.countsById();
    const withoutHook = ids.filter((id) => !hooks.has(id));
    const mismatched = receiver.deliveries.filter((d) => d.jobId !== d.webhookId || !everyone.has(d.webhookId));
    const repeatedHooks = [...hooks.values()].filter((n) => n > 1);
    // Standard Webhooks: a re-sent message (same webhook-id) should be the same message
    const unlikeStream = receiver.deliveries.filter((d) => tally.verdicts.has(d.webhookId) && d.body !== tally.verdicts.get(d.webhookId));
    const errors = ids.filter((id) => tally.decisions.get(id) === "error");
    const runs = await runCounters(redis, "bull", ns, ids);
    const republishRefused = [...countLogsByJob(fleet.logs(), "verdict already in the stream; not appended again").values()].reduce((a, b) => a + b, 0);
    const { started, killed } = fleet.counts();
    const peakRssMiB = Math.round((fleet.peakRssBytes() / 2 ** 20) * 10) / 10;

    report(ctx, {
      title: "1. Crash",
      method:
        `${JOBS} jobs (unique 64×48 PNGs, each with a callbackUrl to a loopback webhook receiver that answers after 0–${RECEIVER_DELAY_MS} ms) ` +
        `enqueued over ${PRODUCE_MS / 1000} s into 2 \`clipguard worker\` processes (demo model, concurrency 16); a random worker was SIGKILLed ` +
        `${KILLS} times, spread over the run, and restarted each time. Workers ran with CLIPGUARD_LOCK_DURATION_MS=${LOCK_MS} and ` +
        `CLIPGUARD_STALLED_INTERVAL_MS=${STALLED_MS}, so a killed worker's jobs return to the queue within seconds.`,
      criteria:
        "every job has exactly one verdict-stream entry (none lost, none duplicated, none an error), and its signed webhook reached the receiver at least once, every repeat carrying the job's id as webhook-id.",
      summary: { jobsRun: ids.length, workersKilled: killed, lost: lost.length, duplicated: duplicated.length, peakRssMiB },
      figures: {
        "jobs enqueued": ids.length,
        "workers SIGKILLed": killed,
        "worker processes started (incl. the first 2)": started,
        "restart to ready, mean (ms)": Math.round(restartMs.reduce((a, b) => a + b, 0) / Math.max(1, restartMs.length)),
        "restart to ready, max (ms)": Math.max(0, ...restartMs),
        "jobs lost": lost.length,
        "jobs with duplicated stream entries": duplicated.length,
        "stream entries for unknown job ids": strangers.length,
        "error verdicts": errors.length,
        "jobs re-run (started more than once, BullMQ ats)": runs.rerunJobs,
        "extra starts over all jobs": runs.extraStarts,
        "stalled detections (BullMQ stc)": runs.stalls,
        "re-runs that found the verdict already published": republishRefused,
        "webhook deliveries": receiver.deliveries.length,
        "repeated webhook deliveries": receiver.deliveries.length - hooks.size,
        "jobs whose webhook arrived more than once": repeatedHooks.length,
        "deliveries whose body differs from the stream's verdict": unlikeStream.length,
        "jobs without a webhook": withoutHook.length,
        "deliveries whose webhook-id is not their job": mismatched.length,
        "deliveries with a bad signature": receiver.rejected(),
        "jobs in BullMQ's failed set": runs.failed.length,
        "drain after the last enqueue (s)": Math.round(drainMs / 100) / 10,
        "peak worker RSS (MiB)": peakRssMiB,
      },
      notes: [
        `kill order seed ${seed} (mulberry32); worker exit codes on the final SIGTERM: ${exitCodes.join(", ")}`,
        ...(unlikeStream.length > 0
          ? [`${unlikeStream.length} webhook deliveries carried a verdict other than the one in the stream (a re-run after the publish sent a freshly computed verdict under the same webhook-id)`]
          : []),
      ],
    });

    expect(drained, "every job got a verdict and a webhook within 120 s of the last enqueue").toBe(true);
    expect(killed).toBe(KILLS);
    expect(lost).toEqual([]);
    expect(duplicated).toEqual([]);
    expect(strangers).toEqual([]);
    expect(errors).toEqual([]);
    expect(withoutHook).toEqual([]);
    expect(mismatched).toEqual([]);
    expect(unlikeStream, "every delivery carries the verdict that is in the stream").toEqual([]);
    expect(receiver.rejected()).toBe(0);
    expect(exitCodes.every((code) => code === 0)).toBe(true);
  });
});
