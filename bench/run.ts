/**
 * `npm run bench [-- --quick | --smoke] [--out FILE]`: measures clipguard against the bare image
 * tower and against transformers.js on the benchmark model (a CLIP ViT-B/32 architecture with
 * seeded random weights, tools/bench-model/), prints a table on stdout, progress on stderr, and
 * writes results.json. See bench/options.ts for the modes and README "Performance" for the figures.
 */
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { env as transformersEnv } from "@huggingface/transformers";
import * as ort from "onnxruntime-node";
import { BENCH_MODEL_CACHE, ensureBenchModel, REPOSITORY_ROOT } from "../tools/bench-model/bench-model-files.js";
import { benchModelMacs } from "../tools/bench-model/bench-model-spec.js";
import { parsePreprocessorConfig } from "../src/clip/preprocess.js";
import { readFile } from "node:fs/promises";
import { measureBare } from "./bare.js";
import { measureDecode } from "./decode.js";
import { measureEngine } from "./engine.js";
import { benchImages } from "./images.js";
import { parseBenchArgs, USAGE } from "./options.js";
import { measurePeer } from "./peer.js";
import { benchPrompts, writeBenchPolicies } from "./prompts.js";
import { buildResults, formatResults } from "./report.js";
import { measureService } from "./service.js";

const BENCH_CACHE = path.join(REPOSITORY_ROOT, ".cache", "bench");

async function main(): Promise<void> {
  const settings = parseBenchArgs(process.argv.slice(2), process.env);
  if (settings === "help") {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const started = performance.now();
  const progress = (line: string) => process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}\n`);
  const threads = os.availableParallelism();

  progress(`mode ${settings.mode}: preparing the ${settings.model} benchmark model (cached in ${BENCH_MODEL_CACHE})`);
  const model = await ensureBenchModel(settings.model, { log: (line) => progress(`model: ${line}`) });
  progress(`model: ${model.generated ? "generated" : "reused"} ${model.dir}`);
  const macs = benchModelMacs(model.spec);
  const imageSize = model.spec.config.vision.imageSize;

  const imageDir = path.join(BENCH_CACHE, "images");
  const small = await benchImages(imageDir, settings.sizes.small, settings.distinctImages.small);
  const large = await benchImages(imageDir, settings.sizes.large, settings.distinctImages.large);
  const meanBytes = (images: { bytes: Buffer }[]) => images.reduce((sum, i) => sum + i.bytes.length, 0) / images.length;
  progress(`images: ${small.length} × ${settings.sizes.small.width}×${settings.sizes.small.height}, ${large.length} × ${settings.sizes.large.width}×${settings.sizes.large.height}`);
  const policiesFile = await writeBenchPolicies(BENCH_CACHE);

  const bare = await measureBare(model.dir, imageSize, { ...settings.bare, threads }, progress);
  const preprocess = parsePreprocessorConfig(JSON.parse(await readFile(path.join(model.dir, "preprocessor_config.json"), "utf8")) as unknown);
  const decode = await measureDecode(
    preprocess,
    [
      { label: settings.sizes.small.key, images: small, count: settings.decode.images.small },
      { label: settings.sizes.large.key, images: large, count: settings.decode.images.large },
    ],
    progress,
  );
  const engine = await measureEngine(
    model.dir,
    policiesFile,
    [
      { label: settings.sizes.small.key, images: small, count: settings.engine.images.small },
      { label: settings.sizes.large.key, images: large, count: settings.engine.images.large },
    ],
    progress,
  );
  const service = await measureService(
    {
      redisUrl: settings.redisUrl,
      modelDir: model.dir,
      policiesFile,
      small: { key: settings.sizes.small.key, images: small },
      large: { key: settings.sizes.large.key, images: large },
      ...settings.service,
    },
    progress,
  );
  // the ceiling again at its best batch size, now that the machine has run for minutes: a shared
  // or throttled machine can change speed during a run, and the ratios use the faster of the two
  const bareAgain = await measureBare(model.dir, imageSize, { ...settings.bare, batchSizes: [bare.bestBatch], threads }, (line) => progress(line.replace("bare:", "bare (again):")));
  const [fewPrompts, manyPrompts] = settings.peer.promptCounts;
  const [fewImages, manyImages] = settings.peer.images;
  const peer = await measurePeer(
    model.dir,
    [
      { prompts: benchPrompts(fewPrompts as 10), images: fewImages },
      { prompts: benchPrompts(manyPrompts as 50), images: manyImages },
    ],
    small,
    { threads },
    progress,
  );

  const results = buildResults(
    {
      mode: settings.mode,
      command: `npm run bench${settings.mode === "full" ? "" : ` -- --${settings.mode}`}`,
      model: { name: model.spec.name, dir: path.relative(REPOSITORY_ROOT, model.dir), macsPerImage: macs.vision, macsPerPrompt: macs.text, imageSize },
      sizes: {
        small: { ...settings.sizes.small, meanBytes: meanBytes(small) },
        large: { ...settings.sizes.large, meanBytes: meanBytes(large) },
      },
      ortVersion: ort.env.versions.node ?? ort.env.versions.common,
      transformersVersion: transformersEnv.version,
      counts: {
        bareWindowMs: settings.bare.windowMs,
        decodeImages: settings.decode.images,
        engineImages: settings.engine.images,
        engineConcurrency: engine.concurrency,
        serviceSmallJobs: settings.service.rssCheckpoints[1] - settings.service.warmupJobs,
        serviceLargeJobs: settings.service.largeJobs,
        rssCheckpointJobs: settings.service.rssCheckpoints,
        duplicateSamples: settings.service.duplicateSamples,
        eventLoopWindows: service.eventLoop.windows,
        eventLoopWindowMs: settings.service.scrapeMs,
        peerImages: { [String(fewPrompts)]: fewImages, [String(manyPrompts)]: manyImages },
        servicePolicyPrompts: 50,
      },
    },
    { bare, bareAgain, decode, engine, service, peer },
  );
  await mkdir(path.dirname(settings.out), { recursive: true });
  await writeFile(settings.out, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(formatResults(results));
  progress(`done; results written to ${path.relative(process.cwd(), settings.out) || settings.out}`);
}

main().then(
  // onnxruntime and transformers.js keep native handles; the figures are out, so leave now
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
