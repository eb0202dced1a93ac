import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Queue, QueueEvents } from "bullmq";
import type { FastifyInstance } from "fastify";
import { Redis } from "ioredis";
import { pino } from "pino";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApiServer } from "../src/api/api-server.js";
import { decide } from "../src/policies/scoring.js";
import { parseDuration, windowStart } from "../src/policies/rescore-window.js";
import { decisionsChanged } from "../src/policies/rescorer.js";
import { loadConfig } from "../src/shared/config.js";
import type { JobVerdict } from "../src/shared/job-schema.js";
import { colourPolicies, tempDir } from "./support/fixtures.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { CLI, startWorker, type WorkerProcess } from "./support/worker-process.js";

type RGB = [number, number, number];

describe("rescore: pure parts", () => {
  it.each([
    ["90s", 90_000],
    ["15m", 900_000],
    ["2h", 7_200_000],
    ["7d", 604_800_000],
    ["1w", 604_800_000],
    ["500ms", 500],
    ["1.5h", 5_400_000],
  ])("parses the duration %s", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(["", "15", "m", "-5m", "0s", "5 minutes", "1y"])("refuses the duration %j (CLIPGUARD_E_CONFIG)", (text) => {
    expect(() => parseDuration(text)).toThrow(expect.objectContaining({ code: "CLIPGUARD_E_CONFIG" }));
  });

  it("turns a window into an XRANGE start: since → a time, from → after the id", () => {
    expect(windowStart({ since: "1m" }, 1_000_000)).toBe("940000");
    expect(windowStart({ from: "1700000000000-3" })).toBe("(1700000000000-3");
    expect(windowStart({ from: "0" })).toBe("-");
    expect(() => windowStart({ from: "$" })).toThrow(expect.objectContaining({ code: "CLIPGUARD_E_CONFIG" }));
  });

  it.each([
    ["same decisions", "allow", [["a", "allow"]], "allow", [["a", "allow"]], false],
    ["image decision", "allow", [["a", "allow"]], "review", [["a", "review"]], true],
    ["one policy, same image decision", "block", [["a", "block"], ["b", "allow"]], "block", [["a", "block"], ["b", "review"]], true],
    ["a new policy that allows", "allow", [["a", "allow"]], "allow", [["a", "allow"], ["b", "allow"]], false],
    ["a removed policy that reviewed", "review", [["a", "allow"], ["b", "review"]], "review", [["a", "review"]], true],
  ] as const)("counts as changed: %s → %s", (_name, before, beforePolicies, after, afterPolicies, changed) => {
    const policies = (list: readonly (readonly [string, string])[]) => list.map(([id, decision]) => ({ id, decision: decision as "allow" }));
    expect(decisionsChanged({ decision: before, policies: policies(beforePolicies) }, { decision: after, policies: policies(afterPolicies) })).toBe(changed);
  });
});

describe("rescore: a stored window against new thresholds", () => {
  const ns = testNamespace();
  const verdictStream = `${ns}:verdicts`;
  let url: string;
  let redis: Redis;
  let worker: WorkerProcess;
  let queue: Queue;
  let events: QueueEvents;
  let newPolicies: string;
  const verdicts: JobVerdict[] = [];
  let expiredJob = "";
  const NEW_RED = { review: 0.4, block: 0.95 };

  async function animation(shade: number): Promise<Buffer> {
    const frames = await Promise.all(
      Array.from({ length: 10 }, (_, i) => {
        const v = 30 + 20 * i + shade;
        const [r, g, b]: RGB = i === 5 ? [220, 20, 30] : [v, v, v];
        return sharp({ create: { width: 40, height: 30, channels: 3, background: { r, g, b } } }).png().toBuffer();
      }),
    );
    return sharp(frames, { join: { animated: true } }).gif({ delay: Array<number>(10).fill(100) }).toBuffer();
  }

  beforeAll(async () => {
    url = await testRedisUrl();
    redis = new Redis(url);
    const dir = await tempDir();
    const oldPolicies = path.join(dir, "old.yaml");
    newPolicies = path.join(dir, "new.yaml");
    await fs.writeFile(oldPolicies, colourPolicies(ns));
    // the same prompts (their embeddings are in the shared text cache), other red thresholds
    await fs.writeFile(newPolicies, colourPolicies(ns, NEW_RED.review, NEW_RED.block));
    worker = await startWorker({ REDIS_URL: url, CLIPGUARD_QUEUE: ns, CLIPGUARD_POLICIES: oldPolicies, CLIPGUARD_VERDICT_STREAM: verdictStream });
    queue = new Queue(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
    events = new QueueEvents(ns, { connection: new Redis(url, { maxRetriesPerRequest: null }) });
    await events.waitUntilReady();

    // colours unique to this run, so the shared image-embedding cache starts empty for them
    const shade = Number.parseInt(ns.slice(-2), 16) % 8;
    const solid = (rgb: RGB) =>
      sharp({ create: { width: 64, height: 48, channels: 3, background: { r: rgb[0] + shade, g: rgb[1], b: rgb[2] } } })
        .png()
        .toBuffer();
    const images = [
      await solid([220, 20, 30]), // red: block before and after
      await solid([128, 128, 128]), // grey: red ≈ 0.45, allow → review
      await solid([20, 40, 220]), // blue: review (blue policy) before and after
      await solid([180, 90, 90]), // reddish: between the old and the new thresholds
      await animation(shade), // red 6th frame: block, frame 5, before and after
      await solid([100, 100, 104]), // grey, whose embeddings will have expired
    ];
    for (const png of images) {
      const job = await queue.add("moderate", { image: { base64: png.toString("base64") } });
      verdicts.push((await job.waitUntilFinished(events, 30_000)) as JobVerdict);
    }
    const expired = verdicts.at(-1)!;
    expiredJob = expired.jobId;
    expect(await redis.del(`clipguard:imgemb:${expired.model.fingerprint}:${expired.imageSha256}:f8.t2x9`)).toBe(1);
  });

  afterAll(async () => {
    expect(await worker.stop()).toBe(0);
    await queue.obliterate({ force: true });
    await Promise.all([queue.close(), events.close()]);
    for (const v of verdicts) await redis.del(`clipguard:imgemb:${v.model.fingerprint}:${v.imageSha256}:f8.t2x9`);
    await cleanupNamespace(redis, ns);
    redis.disconnect();
  });

  /** The jobs whose decisions the new red thresholds change, worked out from the published scores. */
  function expectedChanges(): Map<string, { oldDecision: string; newDecision: string }> {
    const changes = new Map<string, { oldDecision: string; newDecision: string }>();
    for (const v of verdicts) {
      if (v.jobId === expiredJob) continue;
      const policies = v.policies.map((p) => (p.id === "red" ? { ...p, decision: decide(p.score, NEW_RED) } : p));
      const order = ["allow", "review", "block"];
      const decision = policies.reduce((worst, p) => (order.indexOf(p.decision) > order.indexOf(worst) ? p.decision : worst), "allow");
      if (decisionsChanged(v, { decision, policies })) changes.set(v.jobId, { oldDecision: v.decision, newDecision: decision });
    }
    return changes;
  }

  async function clipguard(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, REDIS_URL: url, CLIPGUARD_VERDICT_STREAM: verdictStream, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    return { code, stdout, stderr };
  }

  it("publishes exactly the changed verdicts, skips the expired one, and never runs the vision tower", async () => {
    const changes = expectedChanges();
    expect(verdicts[4]).toMatchObject({ decision: "block", frames: 8 }); // judged again from its 8 stored frames
    // the fixture covers both kinds: changed (grey, reddish) and unchanged (red, blue, the animation)
    expect(changes.size).toBeGreaterThanOrEqual(2);
    expect(changes.size).toBeLessThanOrEqual(verdicts.length - 3);

    const run = await clipguard(["rescore", "--from", "0", "--policies", newPolicies, "--json"], { CLIPGUARD_RESCORE_STREAM: `${ns}:rescored` });
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const summary = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(summary).toMatchObject({
      seen: verdicts.length,
      changed: changes.size,
      unchanged: verdicts.length - 1 - changes.size,
      skipped: 1,
      skippedReasons: { expired: 1, otherModel: 0, untiled: 0 },
      visionRuns: 0,
      textRuns: 0,
    });

    const entries = await redis.xrange(`${ns}:rescored`, "-", "+");
    const published = new Map(
      entries.map(([, fields]) => {
        const f = Object.fromEntries(Array.from({ length: fields.length / 2 }, (_, i) => [fields[2 * i], fields[2 * i + 1]])) as Record<string, string>;
        return [f["jobId"]!, f];
      }),
    );
    expect(entries).toHaveLength(changes.size);
    expect([...published.keys()].sort()).toEqual([...changes.keys()].sort());
    for (const [jobId, change] of changes) {
      const entry = published.get(jobId)!;
      expect({ oldDecision: entry["oldDecision"], newDecision: entry["newDecision"] }).toEqual(change);
      const rescored = JSON.parse(entry["verdict"]!) as JobVerdict & { rescoredFrom: string };
      const old = verdicts.find((v) => v.jobId === jobId)!;
      expect(rescored).toMatchObject({ jobId, decision: change.newDecision, imageSha256: old.imageSha256, rescoredFrom: old.policyVersion });
      expect(rescored.policyVersion).not.toBe(old.policyVersion);
      // the same embeddings: the scores do not move, only the decisions
      expect(rescored.policies.map((p) => p.score)).toEqual(old.policies.map((p) => p.score));
    }
  });

  it("prints a summary line for --since", async () => {
    const run = await clipguard(["rescore", "--since", "1h", "--policies", newPolicies], { CLIPGUARD_RESCORE_STREAM: `${ns}:rescored-since` });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^rescored ${verdicts.length} verdicts against policy version [0-9a-f]{12}: \\d+ changed, \\d+ unchanged, 1 skipped \\(expired 1\\); vision tower runs 0, text tower runs 0\\n$`));
    // the verdict stream is left alone (the rescore stream is separate)
    expect(await redis.xlen(verdictStream)).toBe(verdicts.length);
  });

  it("refuses a missing or doubled window, exit 2", async () => {
    for (const args of [["rescore"], ["rescore", "--since", "1h", "--from", "0"], ["rescore", "--since", "soon"]]) {
      const run = await clipguard(args, {});
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/CLIPGUARD_E_CONFIG/);
    }
  });

  describe("POST /v1/rescore", () => {
    let app: FastifyInstance;
    let base = "";
    const key = `key-${ns}`;

    beforeAll(async () => {
      const config = loadConfig({
        REDIS_URL: url,
        CLIPGUARD_QUEUE: ns,
        CLIPGUARD_VERDICT_STREAM: verdictStream,
        CLIPGUARD_RESCORE_STREAM: `${ns}:rescored-api`,
        CLIPGUARD_POLICIES: newPolicies,
        CLIPGUARD_API_KEYS: key,
      });
      app = await buildApiServer(config, { logger: pino({ level: "silent" }), rateLimitNamespace: `${ns}:ratelimit:` });
      await app.listen({ port: 0, host: "127.0.0.1" });
      base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    });

    afterAll(async () => {
      await app.close();
    });

    const post = async (body: unknown, auth = true) => {
      const res = await fetch(`${base}/v1/rescore`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(auth ? { authorization: `Bearer ${key}` } : {}) },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };

    it("rescores against the API's policies file and answers with the counts", async () => {
      const res = await post({ from: "0" });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ seen: verdicts.length, changed: expectedChanges().size, skipped: 1, visionRuns: 0 });
      expect(await redis.xlen(`${ns}:rescored-api`)).toBe(expectedChanges().size);
    });

    it.each([[{}], [{ since: "1h", from: "0" }], [{ since: "soon" }], [{ from: "$" }], [{ since: "1h", policies: "x" }]])(
      "refuses the body %j with 400",
      async (body) => {
        const res = await post(body);
        expect(res.status).toBe(400);
        expect(res.body).toMatchObject({ error: { code: "CLIPGUARD_E_JOB_INVALID" } });
      },
    );

    it("needs the API key", async () => {
      expect((await post({ from: "0" }, false)).status).toBe(401);
    });
  });
});
