import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { JobVerdict } from "../src/shared/job-schema.js";
import { testRedisUrl } from "./support/redis.js";
import { CLI } from "./support/worker-process.js";

function demo(env: Record<string, string>, args: string[] = []) {
  return spawnSync(process.execPath, [CLI, "demo", ...args], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 120_000 });
}

const examples = fs.readdirSync("examples/images").sort();
const hasRedisServer = spawnSync("redis-server", ["--version"]).status === 0;

describe("npm run demo (clipguard demo)", () => {
  it("moderates every example image through Redis and a worker, and exits 0", async () => {
    const result = demo({ REDIS_URL: await testRedisUrl() }, ["--json"]);
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const verdicts = result.stdout.trim().split("\n").map((l) => JSON.parse(l) as JobVerdict);
    expect(verdicts.map((v) => v.imageId).sort()).toEqual(examples);
    const byImage = Object.fromEntries(verdicts.map((v) => [v.imageId, v]));
    expect(byImage["red-poster.png"]?.decision).toBe("block");
    expect(byImage["chelsea.png"]?.decision).toBe("allow");
    for (const v of verdicts) expect(v.jobId).toBeTruthy();
  });

  it("prints a readable table by default", async () => {
    const result = demo({ REDIS_URL: await testRedisUrl() });
    expect(result.status).toBe(0);
    for (const image of examples) expect(result.stdout).toMatch(new RegExp(`^${image.replace(".", "\\.")}\\s+(allow|review|block)`, "m"));
  });

  it.skipIf(!hasRedisServer)("starts a throwaway redis-server when nothing answers at REDIS_URL", () => {
    const result = demo({ REDIS_URL: "redis://127.0.0.1:1" }, ["--json"]);
    expect(result.status).toBe(0);
    expect(result.stderr).toMatch(/started a throwaway redis-server/);
    expect(result.stdout.trim().split("\n")).toHaveLength(examples.length);
  });

  it("says how to get Redis when none answers and redis-server is not on the PATH", () => {
    // node itself is started by absolute path, so an empty PATH only hides redis-server
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), "clipguard-nopath-"));
    const result = demo({ REDIS_URL: "redis://127.0.0.1:1", PATH: empty });
    expect(result.status).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(/needs Redis/);
    expect(result.stderr).toMatch(/apt-get install redis-server/);
  });
});
