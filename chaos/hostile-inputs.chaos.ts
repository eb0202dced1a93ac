/**
 * 5. Hostile inputs: broken, disguised, oversized and never-ending images, each through a real
 * worker. Each must fail as unrecoverable (one attempt, an error verdict) with its own error code
 * in under 2 s, while the worker stays up within a memory bound; afterwards a normal image still
 * gets a verdict.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { solidPng, RED } from "../test/support/fixtures.js";
import { report } from "./support/figures.js";
import { sized } from "./support/profile.js";
import * as hostile from "./support/hostile-images.js";
import { startHostileWorker, type HostileWorker } from "./support/hostile-worker.js";
import { startHostileServer, startServer, type TestServer } from "./support/hostile-net.js";

/** Enqueue → error verdict, the bound. */
const MAX_MS = 2000;
/**
 * The worker's RSS bound (demo model, concurrency 16). At rest it is ~170 MiB; the 50 MB base64 job
 * (67 MB of job data that BullMQ fetches and parses before any clipguard code runs) lifts it to
 * ~800 MiB. The HTTP API caps bodies and the client refuses such images before they are enqueued,
 * so only a producer writing to Redis directly can send one.
 */
const RSS_BOUND_MIB = 1024;
/** Low enough that "never answers" fails within MAX_MS. */
const FETCH_TIMEOUT_MS = 1000;
const MAX_IMAGE_BYTES = 20 * 1024 * 1024;
/** Every input is sent this many times; the figures keep the slowest. */
const ROUNDS = sized({ quick: 1, full: 3 });

interface HostileCase {
  name: string;
  /** The job's image, built once the servers are up. */
  image: () => Promise<Record<string, string>>;
  /** The error code it must fail with; "verdict" where the bytes are a valid allowlisted image. */
  expect: string;
}

describe("5. Hostile inputs", () => {
  let w: HostileWorker;
  let files: TestServer;
  let canary: TestServer;
  const refs: string[] = [];

  beforeAll(async () => {
    canary = await startServer("127.0.0.1");
    const named = async (bytes: Buffer) => ({ bytes, type: "image/png" });
    files = await startHostileServer("127.0.0.1", {
      "canary.svg": { bytes: hostile.svgReferencing(`${canary.origin}/pixel.png`), type: "image/svg+xml" },
      "tiff.png": await named(await hostile.photoTiff()),
      "pdf.png": await named(hostile.tinyPdf()),
      "psd.png": await named(hostile.tinyPsd()),
    });
    w = await startHostileWorker({
      CLIPGUARD_ALLOWED_HOSTS: "127.0.0.1",
      CLIPGUARD_FETCH_TIMEOUT_MS: String(FETCH_TIMEOUT_MS),
      CLIPGUARD_MAX_IMAGE_BYTES: String(MAX_IMAGE_BYTES),
    });
  });

  afterAll(async () => {
    await w?.close();
    await Promise.all([files?.close(), canary?.close()]);
  });

  const ref = async (bytes: Buffer) => {
    const key = `clipguard:ref:${randomBytes(12).toString("base64url")}`;
    await w.redis.set(key, bytes, "EX", 600);
    refs.push(key);
    return { ref: key };
  };
  const base64 = (bytes: Buffer) => ({ base64: bytes.toString("base64") });
  const url = (path: string) => ({ url: `${files.origin}${path}` });
  const FIFTY_MB = 50 * 1024 * 1024;

  const cases: HostileCase[] = [
    { name: "zero bytes (ref)", image: () => ref(Buffer.alloc(0)), expect: "CLIPGUARD_E_IMAGE_EMPTY" },
    { name: "random bytes, 256 KiB (ref)", image: () => ref(hostile.seededBytes(256 * 1024)), expect: "CLIPGUARD_E_IMAGE_FORMAT" },
    { name: "truncated JPEG (base64)", image: async () => base64(hostile.truncate(await hostile.photoJpeg())), expect: "CLIPGUARD_E_IMAGE_DECODE" },
    { name: "truncated PNG (base64)", image: async () => base64(hostile.truncate(await hostile.photoPng())), expect: "CLIPGUARD_E_IMAGE_DECODE" },
    { name: "PNG header claiming 100000x100000 (base64)", image: async () => base64(hostile.pngClaiming(100_000, 100_000)), expect: "CLIPGUARD_E_IMAGE_PIXELS" },
    { name: "14000x14000 single-colour PNG, 24 KB (base64)", image: async () => base64(hostile.singleColourPng(14_000, 14_000)), expect: "CLIPGUARD_E_IMAGE_PIXELS" },
    { name: "GIF with 10,000 frames of 160x160, 2.2 MB (ref)", image: () => ref(hostile.manyFrameGif(10_000)), expect: "CLIPGUARD_E_IMAGE_PIXELS" },
    { name: "SVG referencing a canary server (url)", image: async () => url("/file/canary.svg"), expect: "CLIPGUARD_E_IMAGE_FORMAT" },
    { name: "SVG referencing a canary server (base64)", image: async () => base64(hostile.svgReferencing(`${canary.origin}/b.png`)), expect: "CLIPGUARD_E_IMAGE_FORMAT" },
    { name: "PDF named .png, sent as image/png (url)", image: async () => url("/file/pdf.png"), expect: "CLIPGUARD_E_IMAGE_FORMAT" },
    { name: "PSD named .png, sent as image/png (url)", image: async () => url("/file/psd.png"), expect: "CLIPGUARD_E_IMAGE_FORMAT" },
    { name: "TIFF named .png, sent as image/png (url)", image: async () => url("/file/tiff.png"), expect: "verdict" },
    { name: "50 MB payload (ref)", image: () => ref(hostile.oversizedPng(FIFTY_MB)), expect: "CLIPGUARD_E_IMAGE_TOO_LARGE" },
    { name: "50 MB payload (base64)", image: async () => base64(hostile.oversizedPng(FIFTY_MB)), expect: "CLIPGUARD_E_IMAGE_TOO_LARGE" },
    { name: "base64 that is not base64", image: async () => ({ base64: "this is *not* base64 at all!" }), expect: "CLIPGUARD_E_BASE64" },
    { name: "URL that never answers", image: async () => url("/silent.png"), expect: "CLIPGUARD_E_URL_STALLED" },
    { name: "URL that streams forever, full speed", image: async () => url("/stream.png"), expect: "CLIPGUARD_E_IMAGE_TOO_LARGE" },
    { name: "URL that streams forever, one byte per 100 ms", image: async () => url("/trickle.png"), expect: "CLIPGUARD_E_URL_STALLED" },
    { name: "URL that redirects 20 times", image: async () => url("/hop/1"), expect: "CLIPGUARD_E_URL_REDIRECTS" },
  ];

  it("fails every hostile input fast, once, with its own code; the worker stays up", async (ctx) => {
    const rows: { name: string; code: string; ms: number; enqueueMs: number; pickupMs: number; attempts: number; rss: number; expect: string }[] = [];
    const rssAtRest = await w.rssMiB();
    for (let round = 0; round < ROUNDS; round++) {
      for (const c of cases) {
        const image = await c.image();
        const outcome = await w.run({ image }, undefined, 20_000).catch((err: Error) => ({ verdict: undefined, ms: NaN, enqueueMs: NaN, pickupMs: NaN, attempts: -1, err }));
        const code = outcome.verdict === undefined ? `no verdict (${"err" in outcome ? outcome.err.message : ""})` : outcome.verdict.error?.code ?? "verdict";
        rows.push({ ...outcome, name: c.name, code, rss: await w.rssMiB(), expect: c.expect });
      }
    }
    const normal = await w.run({ image: base64(await solidPng(RED)) });
    const alive = w.worker.child.exitCode === null && (await fetch(`http://127.0.0.1:${w.worker.metricsPort}/healthz`)).status === 200;
    const failing = rows.filter((r) => r.expect !== "verdict");
    const worstMs = Math.max(...failing.map((r) => r.ms));
    const peak = w.peakRssMiB();

    const figures: Record<string, number | string> = {};
    // per input, the slowest round (or the first that went wrong)
    const shown = new Map<string, (typeof rows)[number]>();
    for (const r of rows) {
      const seen = shown.get(r.name);
      const wrong = (x: (typeof rows)[number]) => x.code !== x.expect || (x.expect !== "verdict" && x.attempts !== 1);
      if (seen === undefined || (!wrong(seen) && (wrong(r) || r.ms > seen.ms))) shown.set(r.name, r);
    }
    for (const r of shown.values()) {
      const upload =
        r.enqueueMs > 100 ? ` (queue.add took ${Math.round(r.enqueueMs)} ms; BullMQ fetched and parsed the job for ${Math.round(r.pickupMs)} ms before clipguard code ran)` : "";
      figures[r.name] = `${r.code}, ${Math.round(r.ms)} ms, attempts ${r.attempts}, RSS after ${Math.round(r.rss)} MiB${upload}`;
    }
    figures["normal image afterwards"] = `${normal.verdict.decision}, ${normal.ms} ms`;
    figures["worker RSS at rest (MiB)"] = Math.round(rssAtRest);
    figures["worker RSS peak (MiB)"] = Math.round(peak);
    figures["worker RSS bound (MiB)"] = RSS_BOUND_MIB;
    figures["canary connections (SVG)"] = canary.connections;
    report(ctx, {
      title: "5. Hostile inputs",
      method:
        `${cases.length} hostile inputs (each sent ${ROUNDS} time${ROUNDS > 1 ? "s" : ""}; the figures show the slowest), one after the other, through one real worker (demo model, own redis-server) as raw BullMQ jobs with the ` +
        `client's job options (5 attempts, exponential backoff): bytes by ref or base64, or URLs on a loopback server allowed by ` +
        `CLIPGUARD_ALLOWED_HOSTS=127.0.0.1, with CLIPGUARD_FETCH_TIMEOUT_MS=${FETCH_TIMEOUT_MS} and CLIPGUARD_MAX_IMAGE_BYTES=${MAX_IMAGE_BYTES}. ` +
        "Time is from the job being in the queue (queue.add resolved) to its verdict-stream entry; RSS is clipguard_process_resident_memory_bytes " +
        "sampled every 100 ms. Then one normal image.",
      criteria:
        `every input but the TIFF fails with its expected code, 1 attempt, in under ${MAX_MS} ms (for the 50 MB raw-BullMQ base64 job: from the processor's start, and under ${2.5 * MAX_MS} ms end to end, because BullMQ alone spends 0.7-3 s moving its 67 MB of job data); the SVG's canary sees no connection; ` +
        `the worker stays up with RSS under ${RSS_BOUND_MIB} MiB; the normal image gets a verdict.`,
      summary: { hostileInputs: cases.length, worstHostileMs: worstMs, peakRssMiB: Math.round(peak), jobsRun: rows.length + 1 },
      figures,
      notes: [
        "A TIFF named .png is judged as the TIFF it is: TIFF is on the format allowlist, and magic bytes decide the format, never a name or a Content-Type.",
        "Fixed by this scenario: a fetch that stalls after the server took the connection (no answer, or a body that never ends) was retried as CLIPGUARD_E_URL_TIMEOUT; it is now CLIPGUARD_E_URL_STALLED, not retried.",
        "Fixed by this scenario: an animation within the header pixel limit (10,000 frames of 160x160) took 2.2 s to decode 8 sampled frames, each rebuilt from frame 0; the decode work is now budgeted (8 x CLIPGUARD_MAX_PIXELS) and an animation over it is refused before any pixel is decoded.",
        "Fixed by this scenario: an oversized image.ref was read out of Redis before its size was checked; STRLEN now refuses it first. Base64 text far over the limit is refused before it is copied.",
        "The 50 MB base64 job is 67 MB of job data: BullMQ's moveToActive reply and JSON.parse of it take the worker's main thread ~1 s on a quiet machine (2-4 s on this 2-core machine under other load) before any clipguard code runs, and lift RSS by ~500 MiB. Only a producer writing to Redis directly can send it: the HTTP API caps bodies at the base64 of CLIPGUARD_MAX_IMAGE_BYTES and the client refuses such images before enqueueing.",
      ],
    });

    for (const r of rows) {
      expect.soft(r.code, r.name).toBe(r.expect === "verdict" ? "verdict" : r.expect);
      if (r.expect !== "verdict") {
        expect.soft(r.attempts, r.name).toBe(1);
        // a payload BullMQ must move and parse for seconds before clipguard code runs (only the
        // 50 MB raw-BullMQ base64 job) is held to the bound from the processor's start, and to
        // 2.5× the bound end to end; its end-to-end time is reported above either way
        const transfer = r.pickupMs > MAX_MS / 4;
        expect.soft(transfer ? r.ms - r.pickupMs : r.ms, r.name).toBeLessThan(MAX_MS);
        if (transfer) expect.soft(r.ms, `${r.name}, end to end`).toBeLessThan(2.5 * MAX_MS);
      }
    }
    expect(canary.connections).toBe(0);
    expect(alive).toBe(true);
    expect(peak).toBeLessThan(RSS_BOUND_MIB);
    expect(normal.verdict.decision).not.toBe("error");
  });
});
