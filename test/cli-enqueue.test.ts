import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import readline from "node:readline";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "./support/fixtures.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { CLI, startWorker, type WorkerProcess } from "./support/worker-process.js";

const RED_POSTER = path.resolve("examples/images/red-poster.png");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  lines: Record<string, unknown>[];
}

let redisUrl: string;
let redis: Redis;

/** Runs `clipguard ARGS` against the namespace `ns` (queue `ns`, stream `ns:verdicts`). */
async function clipguard(ns: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, REDIS_URL: redisUrl, CLIPGUARD_QUEUE: ns, CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  const lines = stdout
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  return { code, stdout, stderr, lines };
}

beforeAll(async () => {
  redisUrl = await testRedisUrl();
  redis = new Redis(redisUrl);
});

afterAll(async () => {
  redis?.disconnect();
});

describe("clipguard enqueue / verdicts without a worker", () => {
  let ns: string;

  afterEach(async () => {
    await cleanupNamespace(redis, ns);
  });

  it("prints one job id per input and exits 0", async () => {
    ns = testNamespace();
    const run = await clipguard(ns, ["enqueue", "--policies", "mostly_red", RED_POSTER, "https://example.com/a.png"]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const ids = run.stdout.trim().split("\n");
    expect(ids).toHaveLength(2);
    for (const id of ids) expect(id).toMatch(UUID);
    const queue = new Queue(ns, { connection: redis });
    expect((await queue.getJob(ids[1] ?? ""))?.data).toEqual({ image: { url: "https://example.com/a.png" }, policies: ["mostly_red"] });
    await queue.close();
  });

  it("reports an input it cannot read on stderr, enqueues the rest and exits 1", async () => {
    ns = testNamespace();
    const run = await clipguard(ns, ["enqueue", "/no/such/image.png", RED_POSTER]);
    expect(run.code).toBe(1);
    expect(run.stdout.trim()).toMatch(UUID);
    expect(run.stderr).toBe("clipguard: /no/such/image.png: cannot read /no/such/image.png (ENOENT) [CLIPGUARD_E_IMAGE_READ]\n");
  });

  it("exits 1 with a CLIPGUARD_E_WAIT_TIMEOUT line when --wait times out", async () => {
    ns = testNamespace();
    const run = await clipguard(ns, ["enqueue", "--wait", "--timeout", "0.5", RED_POSTER]);
    expect(run.code).toBe(1);
    expect(run.lines).toHaveLength(1);
    expect(run.lines[0]).toMatchObject({ image: RED_POSTER, error: { code: "CLIPGUARD_E_WAIT_TIMEOUT" } });
    expect(run.lines[0]?.["jobId"]).toMatch(UUID);
    expect(run.lines[0]).not.toHaveProperty("decision");
  });

  // each run starts a node process: one test per case keeps the per-test timeout meaningful
  it.each<[string, string[], Record<string, string>, RegExp]>([
    ["--image-id with two inputs", ["enqueue", "--image-id", "x", RED_POSTER, RED_POSTER], {}, /--image-id names one image.*\[CLIPGUARD_E_CONFIG\]/],
    ["--timeout without --wait", ["enqueue", "--timeout", "5", RED_POSTER], {}, /--timeout needs --wait/],
    ["a --timeout that is not a number", ["enqueue", "--wait", "--timeout", "soon", RED_POSTER], {}, /positive number of seconds/],
    ["enqueue with Redis unreachable", ["enqueue", RED_POSTER], { REDIS_URL: "redis://127.0.0.1:1" }, /^clipguard: Redis at 127\.0\.0\.1:1 is unreachable.*\[CLIPGUARD_E_REDIS\]$/],
    ["verdicts with Redis unreachable", ["verdicts"], { REDIS_URL: "redis://127.0.0.1:1" }, /\[CLIPGUARD_E_REDIS\]$/],
    ["a --from that is not a stream id", ["verdicts", "--from", "yesterday"], {}, /--from "yesterday" is not a stream id/],
    ["an invalid queue name", ["enqueue", RED_POSTER], { CLIPGUARD_QUEUE: "bad:name" }, /CLIPGUARD_QUEUE.*\[CLIPGUARD_E_CONFIG\]/],
  ])("exits 2 with one line for %s", async (_name, args, env, message) => {
    ns = testNamespace();
    const run = await clipguard(ns, args, env);
    expect({ code: run.code, stdout: run.stdout }).toEqual({ code: 2, stdout: "" });
    const stderr = run.stderr.trim().split("\n").filter((line) => !line.startsWith("(run with --help"));
    expect(stderr).toHaveLength(1);
    expect(stderr[0]).toMatch(message);
  });
});

describe("clipguard enqueue / verdicts with a worker", () => {
  const ns = testNamespace();
  let worker: WorkerProcess;
  let dir: string;

  beforeAll(async () => {
    worker = await startWorker({ REDIS_URL: redisUrl, CLIPGUARD_QUEUE: ns, CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts` });
    dir = await tempDir();
  });

  afterAll(async () => {
    await worker?.stop();
    await cleanupNamespace(redis, ns);
    if (dir !== undefined) await fs.rm(dir, { recursive: true });
  });

  it("--wait prints one verdict line per input and exits 1 when one is an error", async () => {
    const junk = path.join(dir, "junk.png");
    await fs.writeFile(junk, "this is not an image");
    const run = await clipguard(ns, ["enqueue", "--wait", "--timeout", "30", RED_POSTER, junk]);
    expect(run.code).toBe(1);
    expect(run.lines).toHaveLength(2);
    const byImage = new Map(run.lines.map((line) => [line["image"], line]));
    expect(byImage.get(RED_POSTER)).toMatchObject({ decision: "block" });
    expect(byImage.get(junk)).toMatchObject({ decision: "error", error: { code: "CLIPGUARD_E_IMAGE_FORMAT" } });
  });

  it("--wait with --image-id and --policies exits 0 with the verdict", async () => {
    const run = await clipguard(ns, ["enqueue", "--wait", "--image-id", "poster-1", "--policies", "mostly_red", RED_POSTER]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.lines).toHaveLength(1);
    expect(run.lines[0]).toMatchObject({ imageId: "poster-1", decision: "block", policies: [{ id: "mostly_red", decision: "block" }] });
  });

  it("verdicts prints the stream entries after --from, and --follow prints new ones until SIGTERM", async () => {
    await clipguard(ns, ["enqueue", "--wait", RED_POSTER]);
    const all = await clipguard(ns, ["verdicts"]);
    expect(all.code).toBe(0);
    expect(all.lines.length).toBeGreaterThanOrEqual(1);
    for (const entry of all.lines) {
      expect(Object.keys(entry).sort()).toEqual(["decision", "id", "jobId", "verdict"]);
      expect((entry["verdict"] as Record<string, unknown>)["jobId"]).toBe(entry["jobId"]);
    }
    const first = all.lines[0]?.["id"] as string;
    const rest = await clipguard(ns, ["verdicts", "--from", first]);
    expect(rest.lines.map((l) => l["id"])).toEqual(all.lines.slice(1).map((l) => l["id"]));

    const follower = spawn(process.execPath, [CLI, "verdicts", "--follow", "--from", "$"], {
      env: { ...process.env, REDIS_URL: redisUrl, CLIPGUARD_QUEUE: ns, CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts` },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<number | null>((resolve) => follower.on("close", resolve));
    const lines = readline.createInterface({ input: follower.stdout });
    const firstLine = new Promise<string>((resolve) => lines.once("line", resolve));
    // give it time to connect and pin "$", then produce a verdict
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const enqueued = await clipguard(ns, ["enqueue", "--image-id", "followed", RED_POSTER]);
    const entry = JSON.parse(await firstLine) as { jobId: string; verdict: { imageId: string } };
    expect(entry.jobId).toBe(enqueued.stdout.trim());
    expect(entry.verdict.imageId).toBe("followed");
    follower.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});
