import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import path from "node:path";
import { Writable } from "node:stream";
import SwaggerParser from "@apidevtools/swagger-parser";
import { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { buildApiServer } from "../src/api/api-server.js";
import { loadConfig } from "../src/shared/config.js";
import { isClipguardError } from "../src/shared/errors.js";
import type { JobData } from "../src/shared/job-schema.js";
import { REDACT_PATHS } from "../src/shared/logger.js";
import { RED, solidPng } from "./support/fixtures.js";
import { cleanupNamespace, testNamespace, testRedisUrl } from "./support/redis.js";
import { startWorker, type WorkerProcess } from "./support/worker-process.js";

const RED_POSTER = path.resolve("examples/images/red-poster.png");

interface Api {
  url: string;
  app: FastifyInstance;
  ns: string;
  key: string;
  logs: string[];
  /** fetch with the API key unless `auth` says otherwise. */
  call(route: string, init?: RequestInit & { auth?: string | null }): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }>;
}

let redisUrl: string;
let redis: Redis;
const started: Api[] = [];

beforeAll(async () => {
  redisUrl = await testRedisUrl();
  redis = new Redis(redisUrl);
});

afterEach(async () => {
  for (const api of started.splice(0)) {
    await api.app.close();
    await cleanupNamespace(redis, api.ns);
  }
});

afterAll(async () => {
  redis?.disconnect();
});

/** Starts the API on a free port with its own queue, stream and rate-limit namespace. */
async function startApi(env: Record<string, string> = {}, ns = testNamespace()): Promise<Api> {
  const key = `key-${randomUUID()}`;
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logs.push(chunk.toString());
      callback();
    },
  });
  const logger = pino({ level: "trace", redact: { paths: REDACT_PATHS, censor: "[redacted]" } }, sink);
  const config = loadConfig({
    REDIS_URL: redisUrl,
    CLIPGUARD_QUEUE: ns,
    CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`,
    CLIPGUARD_API_KEYS: key,
    ...env,
  });
  const app = await buildApiServer(config, { logger, rateLimitNamespace: `${ns}:ratelimit:` });
  await app.listen({ port: 0, host: "127.0.0.1" });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const api: Api = {
    url,
    app,
    ns,
    key,
    logs,
    async call(route, init = {}) {
      const { auth = `Bearer ${key}`, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (auth !== null) headers.set("authorization", auth);
      const response = await fetch(`${url}${route}`, { ...rest, headers });
      const text = await response.text();
      return { status: response.status, body: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>), headers: response.headers };
    },
  };
  started.push(api);
  return api;
}

const json = (body: unknown): RequestInit => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

function upload(bytes: Buffer, fields: Record<string, string> = {}, field = "image"): RequestInit {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  form.append(field, new Blob([bytes], { type: "image/png" }), "upload.png");
  return { method: "POST", body: form };
}

async function queued(ns: string): Promise<number> {
  const queue = new Queue(ns, { connection: redis });
  try {
    return await queue.count();
  } finally {
    await queue.close();
  }
}

async function jobData(ns: string, jobId: string): Promise<JobData | undefined> {
  const queue = new Queue<JobData>(ns, { connection: redis });
  try {
    return (await queue.getJob(jobId))?.data;
  } finally {
    await queue.close();
  }
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("HTTP API without a worker", () => {
  it("leaves health, readiness and the OpenAPI document open and answers 401 on /v1 without a valid key", async () => {
    const api = await startApi();
    for (const route of ["/healthz", "/readyz", "/openapi.json"]) expect((await api.call(route, { auth: null })).status).toBe(200);
    expect((await api.call("/readyz", { auth: null })).body).toEqual({ status: "ready" });
    for (const auth of [null, "Bearer wrong-key", `Basic ${api.key}`, `Bearer ${api.key}x`, "Bearer"]) {
      const post = await api.call("/v1/moderations", { ...json({ url: "https://example.com/a.png" }), auth });
      expect(post.status).toBe(401);
      expect(post.headers.get("www-authenticate")).toMatch(/^Bearer/);
      expect((post.body["error"] as { code: string }).code).toBe("CLIPGUARD_E_UNAUTHORIZED");
      expect((await api.call("/v1/moderations/abc", { auth })).status).toBe(401);
    }
    expect(await queued(api.ns)).toBe(0);
  });

  it("enqueues JSON and multipart submissions: 202, the job id, and the job data", async () => {
    const api = await startApi();
    const byUrl = await api.call(
      "/v1/moderations",
      json({ url: "https://images.example.com/cat.png", imageId: "cat", policies: ["mostly_red"], metadata: { user: 7 }, callbackUrl: "https://example.com/hook" }),
    );
    expect(byUrl.status).toBe(202);
    const jobId = byUrl.body["jobId"] as string;
    expect(byUrl.headers.get("location")).toBe(`/v1/moderations/${jobId}`);
    expect(await jobData(api.ns, jobId)).toEqual({
      image: { url: "https://images.example.com/cat.png" },
      imageId: "cat",
      policies: ["mostly_red"],
      metadata: { user: 7 },
      callbackUrl: "https://example.com/hook",
    });

    const png = await solidPng(RED);
    const byBase64 = await api.call("/v1/moderations", json({ base64: png.toString("base64") }));
    expect(byBase64.status).toBe(202);
    expect(await jobData(api.ns, byBase64.body["jobId"] as string)).toEqual({ image: { base64: png.toString("base64") } });

    const byUpload = await api.call("/v1/moderations", upload(png, { imageId: "up-1", policies: "mostly_red, very_dark" }));
    expect(byUpload.status).toBe(202);
    expect(await jobData(api.ns, byUpload.body["jobId"] as string)).toEqual({
      image: { base64: png.toString("base64") },
      imageId: "up-1",
      policies: ["mostly_red", "very_dark"],
    });

    // a large upload travels through a ref key, not the job
    const large = Buffer.concat([png, Buffer.alloc(300 * 1024)]);
    const byLargeUpload = await api.call("/v1/moderations", upload(large));
    const image = (await jobData(api.ns, byLargeUpload.body["jobId"] as string))?.image as { ref: string };
    expect(image.ref).toMatch(/^clipguard:ref:/);
    expect(await redis.getBuffer(image.ref)).toEqual(large);
    await redis.del(image.ref);

    const status = await api.call(`/v1/moderations/${jobId}`);
    expect(status).toMatchObject({ status: 200, body: { state: "waiting", verdict: null } });
  });

  it("answers 400 with CLIPGUARD_E_JOB_INVALID (or a more precise code) for invalid requests", async () => {
    const api = await startApi();
    const png = (await solidPng(RED)).toString("base64");
    const cases: [RequestInit, number, string][] = [
      [json({ url: "https://example.com/a.png", base64: png }), 400, "CLIPGUARD_E_JOB_INVALID"],
      [json({ imageId: "no image" }), 400, "CLIPGUARD_E_JOB_INVALID"],
      [json({ url: "https://example.com/a.png", colour: "red" }), 400, "CLIPGUARD_E_JOB_INVALID"],
      [json({ url: "ftp://example.com/a.png" }), 400, "CLIPGUARD_E_JOB_INVALID"],
      [json({ url: "not a url" }), 400, "CLIPGUARD_E_JOB_INVALID"],
      [json({ url: "https://example.com/a.png", callbackUrl: "file:///tmp/x" }), 400, "CLIPGUARD_E_JOB_INVALID"],
      [json({ url: "https://example.com/a.png", policies: ["Bad Id"] }), 400, "CLIPGUARD_E_JOB_INVALID"],
      [json({ url: "https://example.com/a.png", metadata: { big: "x".repeat(20_000) } }), 400, "CLIPGUARD_E_JOB_INVALID"],
      [json({ base64: "%%% not base64 %%%" }), 400, "CLIPGUARD_E_BASE64"],
      [json([1, 2]), 400, "CLIPGUARD_E_JOB_INVALID"],
      [{ method: "POST", headers: { "content-type": "application/json" }, body: "{not json" }, 400, "CLIPGUARD_E_JOB_INVALID"],
      [{ method: "POST", headers: { "content-type": "text/plain" }, body: "hello" }, 400, "CLIPGUARD_E_JOB_INVALID"],
      [{ method: "POST", headers: { "content-type": "application/xml" }, body: "<a/>" }, 415, "CLIPGUARD_E_JOB_INVALID"],
      [upload(Buffer.from(png, "base64"), {}, "file"), 400, "CLIPGUARD_E_JOB_INVALID"],
      [upload(Buffer.from(png, "base64"), { policies: " , " }), 400, "CLIPGUARD_E_JOB_INVALID"],
      [upload(Buffer.from(png, "base64"), { colour: "red" }), 400, "CLIPGUARD_E_JOB_INVALID"],
      [upload(Buffer.alloc(0)), 400, "CLIPGUARD_E_IMAGE_EMPTY"],
    ];
    for (const [init, status, code] of cases) {
      const response = await api.call("/v1/moderations", init);
      expect({ status: response.status, code: (response.body["error"] as { code?: string } | undefined)?.code }).toEqual({ status, code });
    }
    const badQuery = await api.call("/v1/moderations?wait=maybe", json({ url: "https://example.com/a.png" }));
    expect(badQuery.status).toBe(400);
    expect((await api.call("/no/such/route")).status).toBe(404);
    expect((await api.call("/v1/moderations/no-such-job")).body).toEqual({ error: { code: "CLIPGUARD_E_NOT_FOUND", message: "no job with id no-such-job" } });
    expect(await queued(api.ns)).toBe(0);
  });

  it("answers 413 for images over CLIPGUARD_MAX_IMAGE_BYTES, as JSON base64 or as an upload", async () => {
    const api = await startApi({ CLIPGUARD_MAX_IMAGE_BYTES: "50000" });
    const tooLarge = await api.call("/v1/moderations", json({ base64: Buffer.alloc(200_000, 1).toString("base64") }));
    expect(tooLarge).toMatchObject({ status: 413, body: { error: { code: "CLIPGUARD_E_IMAGE_TOO_LARGE" } } });
    // under the body limit (4/3 of the image limit plus room) but decoding to more than the limit
    const slightly = await api.call("/v1/moderations", json({ base64: Buffer.alloc(60_000, 1).toString("base64") }));
    expect(slightly).toMatchObject({ status: 413, body: { error: { code: "CLIPGUARD_E_IMAGE_TOO_LARGE" } } });
    const uploaded = await api.call("/v1/moderations", upload(Buffer.alloc(60_000, 1)));
    expect(uploaded).toMatchObject({ status: 413, body: { error: { code: "CLIPGUARD_E_IMAGE_TOO_LARGE" } } });
    expect((await api.call("/v1/moderations", upload(await solidPng(RED)))).status).toBe(202);
  });

  it("answers 429 past CLIPGUARD_API_RATE_LIMIT requests per minute, per key", async () => {
    const api = await startApi({ CLIPGUARD_API_RATE_LIMIT: "3" });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await api.call("/v1/moderations/nope")).status);
    expect(statuses).toEqual([404, 404, 404, 429, 429]);
    const limited = await api.call("/v1/moderations", json({ url: "https://example.com/a.png" }));
    expect(limited).toMatchObject({ status: 429, body: { error: { code: "CLIPGUARD_E_RATE_LIMITED" } } });
    expect(limited.headers.get("retry-after")).not.toBeNull();
    // open routes are not counted
    expect((await api.call("/healthz")).status).toBe(200);
  });

  it("counts the rate limit per key: a second key has its own budget", async () => {
    const first = `k1-${randomUUID()}`;
    const second = `k2-${randomUUID()}`;
    const api = await startApi({ CLIPGUARD_API_RATE_LIMIT: "2", CLIPGUARD_API_KEYS: `${first},${second}` });
    const get = (key: string) => api.call("/v1/moderations/nope", { auth: `Bearer ${key}` });
    expect([(await get(first)).status, (await get(first)).status, (await get(first)).status]).toEqual([404, 404, 429]);
    expect((await get(second)).status).toBe(404);
  });

  it("with ?wait=true answers 202 with the job id when no verdict comes within CLIPGUARD_API_WAIT_MS", async () => {
    const api = await startApi({ CLIPGUARD_API_WAIT_MS: "300" });
    const response = await api.call("/v1/moderations?wait=true", json({ url: "https://example.com/a.png" }));
    expect(response.status).toBe(202);
    expect(typeof response.body["jobId"]).toBe("string");
  });

  it("refuses to start without API keys unless CLIPGUARD_API_AUTH=off", async () => {
    const config = loadConfig({ REDIS_URL: redisUrl, CLIPGUARD_QUEUE: testNamespace() });
    const refused = await buildApiServer(config, { logger: pino({ level: "silent" }) }).then(
      () => "started",
      (err: unknown) => (isClipguardError(err) ? err.code : "other error"),
    );
    expect(refused).toBe("CLIPGUARD_E_CONFIG");
    const api = await startApi({ CLIPGUARD_API_KEYS: "", CLIPGUARD_API_AUTH: "off" });
    expect((await api.call("/v1/moderations", { ...json({ url: "https://example.com/a.png" }), auth: null })).status).toBe(202);
  });

  it("never writes API keys to its logs", async () => {
    const api = await startApi({ CLIPGUARD_LOG_LEVEL: "trace" });
    await api.call("/v1/moderations", json({ url: "https://example.com/a.png" }));
    await api.call("/v1/moderations/nope");
    await api.call("/v1/moderations", { ...json({ url: "https://example.com/a.png" }), auth: `Bearer ${api.key}-wrong` });
    await api.call("/v1/moderations", { ...json({ base64: "!!" }), auth: `Bearer ${api.key}` });
    const text = api.logs.join("");
    expect(text).toContain("incoming request");
    expect(text).not.toContain(api.key);
    expect(text.toLowerCase()).not.toContain("bearer");
  });

  it("serves a valid OpenAPI 3.1 document that describes every route", async () => {
    const api = await startApi();
    const { body } = await api.call("/openapi.json", { auth: null });
    expect(body["openapi"]).toBe("3.1.0");
    await expect(SwaggerParser.validate(structuredClone(body) as never)).resolves.toBeDefined();
    const paths = Object.keys(body["paths"] as object);
    expect(paths.sort()).toEqual(["/healthz", "/openapi.json", "/readyz", "/v1/moderations", "/v1/moderations/{jobId}", "/v1/rescore"]);
  });

  it("answers 503 at once while Redis is down, and /readyz says so", async () => {
    const port = await freePort();
    const server: ChildProcess = spawn("redis-server", ["--port", String(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"], {
      stdio: "ignore",
    });
    const probe = new Redis(`redis://127.0.0.1:${port}`, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => 100 });
    probe.on("error", () => {});
    try {
      for (let i = 0; i < 50; i++) {
        if (await probe.ping().then(() => true, () => false)) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const ns = testNamespace();
      const own = `redis://127.0.0.1:${port}`;
      const previous = redisUrl;
      redisUrl = own;
      let api: Api;
      try {
        api = await startApi({}, ns);
      } finally {
        redisUrl = previous;
      }
      expect((await api.call("/v1/moderations", json({ url: "https://example.com/a.png" }))).status).toBe(202);
      expect((await api.call("/readyz")).status).toBe(200);

      const exited = new Promise((resolve) => server.once("exit", resolve));
      server.kill("SIGKILL");
      await exited;
      const began = Date.now();
      const post = await api.call("/v1/moderations", json({ url: "https://example.com/a.png" }));
      expect(post).toMatchObject({ status: 503, body: { error: { code: "CLIPGUARD_E_REDIS" } } });
      // the message is the catalogue summary: it does not name the Redis host
      expect(JSON.stringify(post.body)).not.toContain(String(port));
      expect((await api.call("/v1/moderations/some-job")).status).toBe(503);
      expect((await api.call("/readyz", { auth: null })).status).toBe(503);
      expect((await api.call("/healthz", { auth: null })).status).toBe(200);
      expect(Date.now() - began).toBeLessThan(10_000);
      started.splice(started.indexOf(api), 1);
      await api.app.close();
    } finally {
      probe.disconnect();
      if (server.exitCode === null && server.signalCode === null) server.kill("SIGKILL");
    }
  });
});

describe("HTTP API with a worker", () => {
  const ns = testNamespace();
  let worker: WorkerProcess;
  let images: http.Server;
  let imagesUrl: string;

  beforeAll(async () => {
    worker = await startWorker({
      REDIS_URL: redisUrl,
      CLIPGUARD_QUEUE: ns,
      CLIPGUARD_VERDICT_STREAM: `${ns}:verdicts`,
      CLIPGUARD_ALLOW_PRIVATE_URLS: "true",
    });
    const red = await fs.readFile(RED_POSTER);
    images = http.createServer((_req, res) => res.writeHead(200, { "content-type": "image/png" }).end(red));
    await new Promise<void>((resolve) => images.listen(0, "127.0.0.1", resolve));
    imagesUrl = `http://127.0.0.1:${(images.address() as AddressInfo).port}/red.png`;
  });

  afterAll(async () => {
    await worker?.stop();
    images?.close();
    await cleanupNamespace(redis, ns);
  });

  it("with ?wait=true answers 200 with the verdict, for JSON URLs, base64 and uploads", async () => {
    const api = await startApi({}, ns);
    const red = await fs.readFile(RED_POSTER);
    const responses = await Promise.all([
      api.call("/v1/moderations?wait=true", json({ url: imagesUrl, imageId: "by-url" })),
      api.call("/v1/moderations?wait=true", json({ base64: red.toString("base64"), imageId: "by-base64" })),
      api.call("/v1/moderations?wait=true", upload(red, { imageId: "by-upload", policies: "mostly_red" })),
    ]);
    for (const response of responses) expect(response).toMatchObject({ status: 200, body: { decision: "block" } });
    expect(responses.map((r) => r.body["imageId"])).toEqual(["by-url", "by-base64", "by-upload"]);
    expect((responses[2]?.body["policies"] as unknown[]).length).toBe(1);

    const junk = await api.call("/v1/moderations?wait=true", upload(Buffer.from("not an image at all")));
    expect(junk).toMatchObject({ status: 200, body: { decision: "error", error: { code: "CLIPGUARD_E_IMAGE_FORMAT" } } });

    const later = await api.call(`/v1/moderations/${responses[0]?.body["jobId"] as string}`);
    expect(later).toMatchObject({ status: 200, body: { verdict: { decision: "block", imageId: "by-url" } } });
    expect(["active", "completed"]).toContain(later.body["state"]);
  });

  it("answers 202 and then serves the verdict under GET /v1/moderations/:jobId", async () => {
    const api = await startApi({}, ns);
    const accepted = await api.call("/v1/moderations", json({ url: imagesUrl }));
    expect(accepted.status).toBe(202);
    let status = await api.call(`/v1/moderations/${accepted.body["jobId"] as string}`);
    for (let i = 0; i < 200 && status.body["state"] !== "completed"; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      status = await api.call(`/v1/moderations/${accepted.body["jobId"] as string}`);
    }
    expect(status).toMatchObject({ status: 200, body: { state: "completed", verdict: { jobId: accepted.body["jobId"], decision: "block" } } });
  });
});
