/**
 * Regression tests for what the chaos suite's Redis-restart scenario found
 * (chaos/redis-restart.chaos.ts): a producer waiting for a verdict (`waitForVerdict`,
 * `enqueueAndWait`, the API's `?wait=true`) failed with CLIPGUARD_E_REDIS when Redis went away
 * during the wait, although the job went on and got its verdict once Redis was back. These tests
 * restart a Redis of their own (the machine's Redis is never stopped).
 */
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startRedisServer, type RedisServer } from "../chaos/support/redis-server.js";
import { ModerationClient } from "../src/client/moderation-client.js";
import type { JobVerdict } from "../src/shared/job-schema.js";
import { VerdictPublisher } from "../src/worker/verdict-publisher.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function verdictOf(jobId: string): JobVerdict {
  return {
    jobId,
    decision: "allow",
    policies: [],
    model: { name: "m", fingerprint: "f" },
    policyVersion: "v",
    timings: { queuedMs: 0, fetchMs: 0, decodeMs: 0, inferenceMs: 0, totalMs: 0 },
    createdAt: new Date().toISOString(),
  };
}

describe("chaos fixes: waiting for a verdict across a Redis restart", () => {
  let server: RedisServer;
  let client: ModerationClient;
  let stream: string;
  const errors: unknown[] = [];

  /** Publishes a verdict the way a worker does, on a connection of its own. */
  const publish = async (jobId: string) => {
    const redis = new Redis(server.url);
    try {
      const verdict = verdictOf(jobId);
      await new VerdictPublisher(redis, { stream, maxLen: 1000 }).publish(verdict);
      return verdict;
    } finally {
      redis.disconnect();
    }
  };

  beforeEach(async () => {
    server = await startRedisServer({ aof: true });
    stream = `test-${randomUUID()}:verdicts`;
    client = new ModerationClient({ redis: server.url, verdictStream: stream, onRedisError: (err) => errors.push(err) });
    // a first wait starts the client's stream watcher while Redis is up
    expect(await client.waitForVerdict("warm-up", { timeoutMs: 50 })).toBeUndefined();
  });

  afterEach(async () => {
    await client.close();
    await server.close();
    errors.length = 0;
  });

  it("a wait that begins while Redis is down gets the verdict published once it is back", async () => {
    await server.stopServer();
    await sleep(300);
    const waiting = client.waitForVerdict("job-1", { timeoutMs: 20_000 });
    await sleep(1_000);
    await server.start();
    const verdict = await publish("job-1");
    expect(await waiting).toEqual(verdict);
    expect(errors.length).toBeGreaterThan(0); // Redis really was away for the client
  });

  it("a verdict published before the wait, while the wait could not read it, is found once Redis is back", async () => {
    // the watcher reads past this entry before anyone waits for it: only the wait's own look finds it
    const verdict = await publish("job-2");
    await sleep(200);
    await server.stopServer();
    await sleep(300);
    const waiting = client.waitForVerdict("job-2", { timeoutMs: 20_000 });
    await sleep(1_000);
    await server.start();
    expect(await waiting).toEqual(verdict);
  });

  it("a wait that spans a Redis restart receives the verdict published after it", async () => {
    const waiting = client.waitForVerdict("job-3", { timeoutMs: 20_000 });
    await sleep(200);
    await server.restart({ downMs: 1_000 });
    const verdict = await publish("job-3");
    expect(await waiting).toEqual(verdict);
  });

  it("a wait still ends with its timeout when Redis does not come back", async () => {
    await server.stopServer();
    await sleep(300);
    const started = Date.now();
    expect(await client.waitForVerdict("job-4", { timeoutMs: 1_500 })).toBeUndefined();
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_400);
  });
});
