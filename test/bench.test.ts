/**
 * The benchmark harness runs end to end and reports every figure. `--smoke` uses a tiny CLIP and
 * tiny images, so this says nothing about speed (timings belong in `npm run bench`, not in
 * tests): it checks that each phase — bare, engine, service through Redis and a real worker
 * process, duplicates, event-loop delay, RSS, the transformers.js peer — produced a positive,
 * finite number and that the table shows every target.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLIP_TOKENIZER_DIR, writeBenchModel } from "../tools/bench-model/bench-model-files.js";
import { BENCH_MODELS } from "../tools/bench-model/bench-model-spec.js";
import { testRedisUrl } from "./support/redis.js";

const run = promisify(execFile);
const hasTokenizer = existsSync(path.join(CLIP_TOKENIZER_DIR, "tokenizer.json"));

const FIGURES = [
  "bare.imagesPerSecond",
  "bare.bestBatch",
  "bare.batch1",
  "bare.batch2",
  "bare.batch4",
  "bare.batch8",
  "bare.batch16",
  "bare.first",
  "bare.again",
  "bare.towerCpuMsPerImage",
  "decode.1mp.cpuMs",
  "decode.12mp.cpuMs",
  "bound.serviceBare.1mp",
  "bound.serviceBare.12mp",
  "engine.1mp",
  "engine.12mp",
  "service.1mp",
  "service.12mp",
  "peer.10",
  "peer.50",
  "duplicate.p50Ms",
  "eventLoop.p99Ms",
  "eventLoop.medianWindowP99Ms",
  "rss.firstCheckpointBytes",
  "rss.lastCheckpointBytes",
  "rss.growthRatio",
  "ratio.serviceBare.1mp",
  "ratio.serviceBare.12mp",
  "ratio.engineBare.1mp",
  "ratio.engineBare.12mp",
  "ratio.servicePeer.10",
  "ratio.servicePeer.50",
] as const;

const TARGETS = [
  "ratio.serviceBare.1mp",
  "ratio.serviceBare.12mp",
  "ratio.servicePeer.10",
  "ratio.servicePeer.50",
  "duplicate.p50Ms",
  "eventLoop.p99Ms",
  "rss.growthRatio",
] as const;

interface Results {
  mode: string;
  machine: Record<string, unknown>;
  figures: Record<string, unknown>;
  targets: { id: string; measured: number; target: number; pass: boolean; bound?: number }[];
}

describe.skipIf(!hasTokenizer)(`npm run bench -- --smoke${hasTokenizer ? "" : ` (skipped: no CLIP tokenizer in ${CLIP_TOKENIZER_DIR})`}`, () => {
  let dir: string;
  let stdout: string;
  let results: Results;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "clipguard-bench-"));
    const out = path.join(dir, "results.json");
    const env = { ...process.env, REDIS_URL: await testRedisUrl() };
    ({ stdout } = await run(process.execPath, ["--import", "tsx", "bench/run.ts", "--smoke", "--out", out], { env, timeout: 170_000 }));
    results = JSON.parse(await readFile(out, "utf8")) as Results;
  }, 180_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reports every figure as a positive finite number", () => {
    expect(results.mode).toBe("smoke");
    for (const key of FIGURES) {
      const value = results.figures[key];
      expect.soft(typeof value === "number" && Number.isFinite(value) && value > 0, `${key} = ${String(value)}`).toBe(true);
    }
  });

  it("describes the machine", () => {
    for (const key of ["cpu", "cores", "node", "onnxruntime", "date"]) expect(results.machine[key], key).toBeTruthy();
  });

  it("compares every target and prints it in the table", () => {
    expect(results.targets.map((t) => t.id)).toEqual([...TARGETS]);
    for (const t of results.targets) {
      expect(t.measured).toBe(results.figures[t.id]);
      expect(typeof t.pass).toBe("boolean");
    }
    for (const label of ["service/bare, 1 MP", "service/bare, 12 MP", "service/peer, 10 prompts", "service/peer, 50 prompts", "duplicate verdict p50", "event-loop delay p99"]) {
      expect(stdout).toContain(label);
    }
    expect(stdout).toMatch(/\d of 7 targets met/);
  });

  it("states the CPU bound of each service/bare ratio: tower / (tower + decode) CPU time", () => {
    for (const size of ["1mp", "12mp"]) {
      const t = results.targets.find((x) => x.id === `ratio.serviceBare.${size}`);
      const tower = results.figures["bare.towerCpuMsPerImage"] as number;
      const decode = results.figures[`decode.${size}.cpuMs`] as number;
      expect(t?.bound).toBeCloseTo(tower / (tower + decode), 10);
      expect(t?.bound).toBeGreaterThan(0);
      expect(t?.bound).toBeLessThan(1);
    }
    expect(results.figures["bare.imagesPerSecond"]).toBe(Math.max(results.figures["bare.first"] as number, results.figures["bare.again"] as number));
    expect(stdout).toContain("CPU bound");
  });
});

describe.skipIf(!hasTokenizer)("the benchmark model's combined onnx/model.onnx (what transformers.js loads)", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "clipguard-bench-model-"));
    await writeBenchModel(path.join(dir, "smoke"), BENCH_MODELS.smoke);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("gives the two towers' normalized embeddings and 100 × their cosines as logits", async () => {
    const onnxDir = path.join(dir, "smoke", "onnx");
    const [combined, vision, text] = await Promise.all(
      ["model.onnx", "vision_model.onnx", "text_model.onnx"].map((file) => ort.InferenceSession.create(path.join(onnxDir, file))),
    );
    expect(combined!.inputNames).toEqual(["input_ids", "pixel_values", "attention_mask"]);
    const size = BENCH_MODELS.smoke.config.vision.imageSize;
    const pixels = new ort.Tensor("float32", Float32Array.from({ length: 2 * 3 * size * size }, (_, i) => Math.sin(i)), [2, 3, size, size]);
    // "a photo of a cat" and a shorter text padded with the end-of-text token, as a batch
    const ids = new ort.Tensor("int64", BigInt64Array.from([49406, 320, 1125, 539, 320, 2368, 49407, 49406, 2368, 49407, 49407, 49407, 49407, 49407].map(BigInt)), [2, 7]);
    const mask = new ort.Tensor("int64", BigInt64Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0].map(BigInt)), [2, 7]);
    const out = await combined!.run({ input_ids: ids, pixel_values: pixels, attention_mask: mask });
    const unit = (data: Float32Array, row: number, dim: number) => {
      const v = data.slice(row * dim, (row + 1) * dim);
      const norm = Math.hypot(...v);
      return v.map((x) => x / norm);
    };
    const dim = BENCH_MODELS.smoke.config.embedDim;
    const imageRef = (await vision!.run({ pixel_values: pixels }))["image_embeds"]!.data as Float32Array;
    const textRef = (await text!.run({ input_ids: ids, attention_mask: mask }))["text_embeds"]!.data as Float32Array;
    const imageEmbeds = out["image_embeds"]!.data as Float32Array;
    const textEmbeds = out["text_embeds"]!.data as Float32Array;
    const logits = out["logits_per_image"]!;
    expect(logits.dims).toEqual([2, 2]);
    expect(out["logits_per_text"]!.dims).toEqual([2, 2]);
    for (let i = 0; i < 2; i++) {
      const image = unit(imageRef, i, dim);
      expect([...imageEmbeds.slice(i * dim, (i + 1) * dim)].map((x, k) => x - image[k]!).every((d) => Math.abs(d) < 1e-5)).toBe(true);
      for (let t = 0; t < 2; t++) {
        const textUnit = unit(textRef, t, dim);
        expect([...textEmbeds.slice(t * dim, (t + 1) * dim)].map((x, k) => x - textUnit[k]!).every((d) => Math.abs(d) < 1e-5)).toBe(true);
        const cosine = image.reduce((sum, x, k) => sum + x * textUnit[k]!, 0);
        expect((logits.data as Float32Array)[i * 2 + t]).toBeCloseTo(100 * cosine, 3);
      }
    }
    await Promise.all([combined, vision, text].map((session) => session!.release()));
  });
});
