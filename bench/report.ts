/**
 * Turns the measurements into results.json (machine description, every figure, ratios, targets)
 * and the table printed on stdout. Targets are reported, never enforced: a slow machine does not
 * make the benchmark fail.
 */
import os from "node:os";
import type { BareResult } from "./bare.js";
import type { BenchMode } from "./options.js";
import type { ServiceResult } from "./service.js";

export interface Measurements {
  bare: BareResult;
  /** The best batch size measured again after the service phase. */
  bareAgain: BareResult;
  /** Size key → CPU ms to check, decode and preprocess one image (bench/decode.ts). */
  decode: Record<string, number>;
  engine: { imagesPerSecond: Record<string, number>; cpuCores: Record<string, number> };
  service: ServiceResult;
  /** Prompt count → images/s. */
  peer: Record<string, number>;
}

export interface RunContext {
  mode: BenchMode;
  command: string;
  model: { name: string; dir: string; macsPerImage: number; macsPerPrompt: number; imageSize: number };
  sizes: { small: { key: string; width: number; height: number; meanBytes: number }; large: { key: string; width: number; height: number; meanBytes: number } };
  ortVersion: string;
  transformersVersion: string;
  /** What the mode measured, for the reader of results.json. */
  counts: Record<string, unknown>;
}

export interface Target {
  id: string;
  label: string;
  measured: number;
  comparison: ">=" | "<=";
  target: number;
  unit: string;
  pass: boolean;
  /** The most this machine's CPU allows for the figure, when there is such a bound (service/bare). */
  bound?: number;
}

export interface BenchResults {
  mode: BenchMode;
  command: string;
  machine: { cpu: string; cores: number; memoryGiB: number; os: string; node: string; onnxruntime: string; transformersJs: string; date: string };
  model: RunContext["model"];
  images: RunContext["sizes"];
  counts: Record<string, unknown>;
  /** Every figure, flat: all positive finite numbers. */
  figures: Record<string, number>;
  targets: Target[];
  /** Where the time goes: CPU use per phase and the worker's stage timings (not figures: may be 0). */
  diagnostics: {
    bareCpuCores: Record<string, number>;
    engineCpuCores: Record<string, number>;
    service: ServiceResult["diagnostics"];
  };
}

function target(id: string, label: string, measured: number, comparison: Target["comparison"], goal: number, unit: string): Target {
  return { id, label, measured, comparison, target: goal, unit, pass: comparison === ">=" ? measured >= goal : measured <= goal };
}

export function buildResults(context: RunContext, m: Measurements): BenchResults {
  const small = context.sizes.small.key;
  const large = context.sizes.large.key;
  // the ceiling is the faster of the two bare measurements (a conservative ratio)
  const bare = Math.max(m.bare.imagesPerSecond, m.bareAgain.imagesPerSecond);
  const bareCores = m.bare.cpuCores[String(m.bare.bestBatch)] ?? 0;
  // CPU time of one image in the tower: cores busy / images per second
  const towerCpuMs = (bareCores * 1000) / m.bare.imagesPerSecond;
  const bound = (size: string) => towerCpuMs / (towerCpuMs + (m.decode[size] ?? Number.NaN));
  const figures: Record<string, number> = {
    "bare.imagesPerSecond": bare,
    "bare.bestBatch": m.bare.bestBatch,
    "bare.first": m.bare.imagesPerSecond,
    "bare.again": m.bareAgain.imagesPerSecond,
    "bare.towerCpuMsPerImage": towerCpuMs,
    [`decode.${small}.cpuMs`]: m.decode[small] ?? Number.NaN,
    [`decode.${large}.cpuMs`]: m.decode[large] ?? Number.NaN,
    [`bound.serviceBare.${small}`]: bound(small),
    [`bound.serviceBare.${large}`]: bound(large),
    ...Object.fromEntries(Object.entries(m.bare.perBatch).map(([batch, ips]) => [`bare.batch${batch}`, ips])),
    [`engine.${small}`]: m.engine.imagesPerSecond[small] ?? Number.NaN,
    [`engine.${large}`]: m.engine.imagesPerSecond[large] ?? Number.NaN,
    [`service.${small}`]: m.service.jobsPerSecond[small] ?? Number.NaN,
    [`service.${large}`]: m.service.jobsPerSecond[large] ?? Number.NaN,
    "peer.10": m.peer["10"] ?? Number.NaN,
    "peer.50": m.peer["50"] ?? Number.NaN,
    "duplicate.p50Ms": m.service.duplicateP50Ms,
    "eventLoop.p99Ms": m.service.eventLoop.p99Ms,
    "eventLoop.worstWindowP99Ms": m.service.eventLoop.maxP99Ms,
    "eventLoop.medianWindowP99Ms": m.service.eventLoop.medianP99Ms,
    "rss.firstCheckpointBytes": m.service.rss.bytes[0],
    "rss.lastCheckpointBytes": m.service.rss.bytes[1],
    "rss.growthRatio": m.service.rss.growthRatio,
  };
  figures[`ratio.serviceBare.${small}`] = figures[`service.${small}`]! / bare;
  figures[`ratio.serviceBare.${large}`] = figures[`service.${large}`]! / bare;
  figures[`ratio.engineBare.${small}`] = figures[`engine.${small}`]! / bare;
  figures[`ratio.engineBare.${large}`] = figures[`engine.${large}`]! / bare;
  figures["ratio.servicePeer.10"] = figures[`service.${small}`]! / figures["peer.10"]!;
  figures["ratio.servicePeer.50"] = figures[`service.${small}`]! / figures["peer.50"]!;

  const [firstJobs, lastJobs] = m.service.rss.atJobs;
  const targets = [
    { ...target(`ratio.serviceBare.${small}`, "service/bare, 1 MP", figures[`ratio.serviceBare.${small}`]!, ">=", 0.9, "×"), bound: bound(small) },
    { ...target(`ratio.serviceBare.${large}`, "service/bare, 12 MP", figures[`ratio.serviceBare.${large}`]!, ">=", 0.75, "×"), bound: bound(large) },
    target("ratio.servicePeer.10", "service/peer, 10 prompts", figures["ratio.servicePeer.10"]!, ">=", 2.5, "×"),
    target("ratio.servicePeer.50", "service/peer, 50 prompts", figures["ratio.servicePeer.50"]!, ">=", 6, "×"),
    target("duplicate.p50Ms", "duplicate verdict p50", figures["duplicate.p50Ms"]!, "<=", 5, "ms"),
    target("eventLoop.p99Ms", "worker event-loop delay p99", figures["eventLoop.p99Ms"]!, "<=", 50, "ms"),
    target("rss.growthRatio", `worker RSS ${lastJobs} / ${firstJobs} jobs`, figures["rss.growthRatio"]!, "<=", 1.1, "×"),
  ];
  const cpus = os.cpus();
  return {
    mode: context.mode,
    command: context.command,
    machine: {
      cpu: cpus[0]?.model.trim() ?? "unknown",
      cores: os.availableParallelism(),
      memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
      os: `${os.type()} ${os.release()} ${os.arch()}`,
      node: process.version,
      onnxruntime: context.ortVersion,
      transformersJs: context.transformersVersion,
      date: new Date().toISOString(),
    },
    model: context.model,
    images: context.sizes,
    counts: context.counts,
    figures,
    targets,
    diagnostics: { bareCpuCores: m.bare.cpuCores, engineCpuCores: m.engine.cpuCores, service: m.service.diagnostics },
  };
}

const fixed = (x: number | undefined, digits = 2): string => (x === undefined ? "—" : x.toFixed(digits));

function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
  return rows.map((row) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ").trimEnd()).join("\n");
}

function diagnosticsLine(r: BenchResults): string {
  const d = r.diagnostics;
  const cores = (x: number | undefined) => fixed(x, 2);
  const stages = Object.entries(d.service.stageMeanMs)
    .map(([stage, ms]) => `${stage} ${fixed(ms, 1)}`)
    .join(", ");
  return [
    `where the time goes: CPU cores busy — bare ${cores(d.bareCpuCores[String(r.figures["bare.bestBatch"])])} (best batch), ` +
      `engine ${Object.entries(d.engineCpuCores).map(([k, v]) => `${k} ${cores(v)}`).join(", ")}, worker (1 MP run) ${cores(d.service.workerCpuCores)}`,
    `worker, 1 MP run, mean ms per job: ${stages}; mean images per image-tower run ${fixed(d.service.meanBatchSize, 2)}`,
    `CPU ms per job, 1 MP run: worker ${fixed(d.service.cpuMsPerJob.worker, 1)} (tower ${fixed(r.figures["bare.towerCpuMsPerImage"], 1)} + decode ` +
      `${fixed(r.figures[`decode.${r.images.small.key}.cpuMs`], 1)} in the bare and decode phases), redis-server ${fixed(d.service.cpuMsPerJob.redis, 1)}, ` +
      `producer and reader ${fixed(d.service.cpuMsPerJob.producer, 1)}`,
  ].join("\n");
}

/** The human-readable report (stdout). */
export function formatResults(r: BenchResults): string {
  const f = r.figures;
  const small = r.images.small;
  const large = r.images.large;
  const mp = (s: { key: string; width: number; height: number }) => s.key.replace(/^(\d+)mp$/, "$1 MP");
  const batches = Object.keys(f)
    .filter((k) => /^bare\.batch\d+$/.test(k))
    .map((k) => k.slice("bare.batch".length))
    .sort((a, b) => Number(a) - Number(b));
  const lines = [
    `clipguard benchmark (${r.mode}): ${r.command}`,
    `model: ${r.model.name} — ${(r.model.macsPerImage / 1e9).toFixed(2)} G multiply-accumulates per image (${r.model.imageSize} px), ${(r.model.macsPerPrompt / 1e9).toFixed(2)} G per 77-token prompt`,
    `machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.memoryGiB} GiB, ${r.machine.os}, Node ${r.machine.node}, onnxruntime-node ${r.machine.onnxruntime}, transformers.js ${r.machine.transformersJs}, ${r.machine.date}`,
    `images: ${mp(small)} = ${small.width}×${small.height} JPEGs (~${Math.round(small.meanBytes / 1024)} KiB), ${mp(large)} = ${large.width}×${large.height} JPEGs (~${Math.round(large.meanBytes / 1024)} KiB)`,
    "",
    "bare: image tower alone (session.run on ready tensors), images/s per batch size",
    table([["batch", ...batches], ["images/s", ...batches.map((b) => fixed(f[`bare.batch${b}`]))]]),
    "",
    table([
      ["figure", "value", "unit"],
      [`bare (best: batch ${f["bare.bestBatch"]}; faster of ${fixed(f["bare.first"])} and ${fixed(f["bare.again"])})`, fixed(f["bare.imagesPerSecond"]), "images/s"],
      ["bare: tower CPU time per image", fixed(f["bare.towerCpuMsPerImage"], 1), "ms"],
      [`decode + preprocess CPU time, ${mp(small)}`, fixed(f[`decode.${small.key}.cpuMs`], 1), "ms"],
      [`decode + preprocess CPU time, ${mp(large)}`, fixed(f[`decode.${large.key}.cpuMs`], 1), "ms"],
      [`engine, ${mp(small)}`, fixed(f[`engine.${small.key}`]), "images/s"],
      [`engine, ${mp(large)}`, fixed(f[`engine.${large.key}`]), "images/s"],
      [`service, ${mp(small)}`, fixed(f[`service.${small.key}`]), "jobs/s"],
      [`service, ${mp(large)}`, fixed(f[`service.${large.key}`]), "jobs/s"],
      ["peer (transformers.js), 10 prompts", fixed(f["peer.10"]), "images/s"],
      ["peer (transformers.js), 50 prompts", fixed(f["peer.50"]), "images/s"],
      ["duplicate verdict p50", fixed(f["duplicate.p50Ms"], 1), "ms"],
      ["event-loop delay p99 (whole run)", fixed(f["eventLoop.p99Ms"], 1), "ms"],
      ["event-loop delay p99 (worst scrape window)", fixed(f["eventLoop.worstWindowP99Ms"], 1), "ms"],
      ["worker RSS, first checkpoint", fixed((f["rss.firstCheckpointBytes"] ?? 0) / 2 ** 20, 0), "MiB"],
      ["worker RSS, last checkpoint", fixed((f["rss.lastCheckpointBytes"] ?? 0) / 2 ** 20, 0), "MiB"],
      [`engine/bare, ${mp(small)}`, fixed(f[`ratio.engineBare.${small.key}`]), "×"],
      [`engine/bare, ${mp(large)}`, fixed(f[`ratio.engineBare.${large.key}`]), "×"],
    ]),
    "",
    table([
      ["target", "measured", "goal", "", "CPU bound"],
      ...r.targets.map((t) => [
        t.label,
        `${fixed(t.measured, t.unit === "ms" ? 1 : 2)} ${t.unit}`,
        `${t.comparison === ">=" ? "≥" : "≤"} ${t.target} ${t.unit}`,
        t.pass ? "✓ pass" : "✗ FAIL",
        t.bound === undefined ? "" : `${fixed(t.bound)} ${t.unit}`,
      ]),
    ]),
    "CPU bound: tower / (tower + decode) CPU time per image — no pipeline on this machine's cores can do better, since every",
    "image costs both (the service also pays for Redis, BullMQ and the producer on the same cores).",
    "",
    diagnosticsLine(r),
    "",
    `${r.targets.filter((t) => t.pass).length} of ${r.targets.length} targets met`,
  ];
  return `${lines.join("\n")}\n`;
}
