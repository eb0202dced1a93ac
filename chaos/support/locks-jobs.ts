/**
 * What the lock-health and shutdown scenarios share: the architecture-exact ViT-B/32 benchmark
 * model, photo-like 1 MP JPEGs made unique per job (no embedding-cache hits), a small content
 * policy file, a producer (ModerationClient: JPEGs over 256 KiB travel as `ref` keys), a ledger of
 * the verdict stream, and a watch on BullMQ's queue events (stalled, failed).
 */
import { randomUUID } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import { benchImages, withUniqueComment } from "../../bench/images.js";
import { ModerationClient } from "../../src/client/moderation-client.js";
import { parseVerdictEntry } from "../../src/client/verdict-stream.js";
import type { JobVerdict } from "../../src/shared/job-schema.js";
import { ensureBenchModel, REPOSITORY_ROOT } from "../../tools/bench-model/bench-model-files.js";

const SIZE_1MP = { key: "1mp", width: 1152, height: 864 };
const DISTINCT_IMAGES = 4;

const POLICIES = [
  "version: 1",
  "defaults:",
  "  scoring: similarity",
  "policies:",
  "  - id: weapons",
  '    prompts: ["a photo of a handgun", "a photo of a rifle"]',
  "    thresholds: { review: 0.5, block: 0.8 }",
  "  - id: violence",
  '    prompts: ["a photo of blood on the floor", "a photo of a fight"]',
  "    thresholds: { review: 0.5, block: 0.8 }",
  "  - id: drugs",
  '    prompts: ["a photo of a syringe with drugs", "a photo of pills on a table"]',
  "    thresholds: { review: 0.5 }",
  "",
].join("\n");

export interface BenchSetup {
  modelDir: string;
  /** True when this run had to generate the model (minutes); the figures say so. */
  modelGenerated: boolean;
  policiesFile: string;
  jpegs: Buffer[];
}

export async function benchSetup(): Promise<BenchSetup> {
  const model = await ensureBenchModel("vit-b-32");
  const images = await benchImages(path.join(REPOSITORY_ROOT, ".cache", "bench", "images"), SIZE_1MP, DISTINCT_IMAGES);
  const dir = await mkdtemp(path.join(os.tmpdir(), "clipguard-chaos-locks-"));
  const policiesFile = path.join(dir, "policies.yaml");
  await writeFile(policiesFile, POLICIES);
  return { modelDir: model.dir, modelGenerated: model.generated, policiesFile, jpegs: images.map((i) => i.bytes) };
}

/** The environment every worker of a scenario shares: its Redis, its queue and streams, the bench model. */
export function workerEnv(redisUrl: string, queue: string, setup: BenchSetup, extra: Record<string, string> = {}): Record<string, string> {
  return {
    REDIS_URL: redisUrl,
    CLIPGUARD_QUEUE: queue,
    CLIPGUARD_VERDICT_STREAM: `${queue}:verdicts`,
    CLIPGUARD_REVIEW_STREAM: `${queue}:review`,
    CLIPGUARD_MODEL_DIR: setup.modelDir,
    CLIPGUARD_POLICIES: setup.policiesFile,
    CLIPGUARD_WATCH_POLICIES: "false",
    ...extra,
  };
}

/** Producer side: enqueues unique JPEGs and reads the verdict stream. */
export class JobLedger {
  readonly client: ModerationClient;
  readonly redis: Redis;
  readonly jobIds: string[] = [];
  private serial = 0;
  private readonly tag = randomUUID().slice(0, 8);

  constructor(
    redisUrl: string,
    readonly queue: string,
    private readonly setup: BenchSetup,
  ) {
    this.redis = new Redis(redisUrl);
    this.client = new ModerationClient({ redis: redisUrl, queue, verdictStream: `${queue}:verdicts`, backoffDelayMs: 200 });
  }

  /** A JPEG no job has used before (same pixels as one of the distinct images, other bytes). */
  uniqueJpeg(): Buffer {
    const n = this.serial++;
    return withUniqueComment(this.setup.jpegs[n % this.setup.jpegs.length]!, `${this.tag}-${n}`);
  }

  async enqueue(count: number): Promise<void> {
    for (let i = 0; i < count; i++) this.jobIds.push(await this.client.enqueue(this.uniqueJpeg()));
  }

  /** Every verdict-stream entry, grouped by job id. */
  async verdicts(): Promise<Map<string, JobVerdict[]>> {
    const byJob = new Map<string, JobVerdict[]>();
    for (const [id, fields] of await this.redis.xrange(`${this.queue}:verdicts`, "-", "+")) {
      const entry = parseVerdictEntry(id, fields);
      if (typeof entry.verdict === "string") continue;
      byJob.set(entry.jobId, [...(byJob.get(entry.jobId) ?? []), entry.verdict]);
    }
    return byJob;
  }

  /** Jobs of this ledger without a verdict, and with more than one. */
  async tally(): Promise<{ verdicts: Map<string, JobVerdict[]>; lost: number; duplicated: number }> {
    const verdicts = await this.verdicts();
    return {
      verdicts,
      lost: this.jobIds.filter((id) => (verdicts.get(id)?.length ?? 0) === 0).length,
      duplicated: this.jobIds.filter((id) => (verdicts.get(id)?.length ?? 0) > 1).length,
    };
  }

  /** Waits until every enqueued job has a verdict; throws after `timeoutMs`. */
  async waitForAll(timeoutMs: number, onTick: () => void = () => undefined): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { lost } = await this.tally();
      if (lost === 0) return;
      if (Date.now() > deadline) throw new Error(`${lost} of ${this.jobIds.length} jobs had no verdict after ${timeoutMs} ms`);
      onTick();
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  async close(): Promise<void> {
    await this.client.close();
    this.redis.disconnect();
  }
}

/** BullMQ's view: jobs reported stalled, and failures (with their reasons). */
export class QueueWatch {
  readonly stalled: string[] = [];
  readonly failed: { jobId: string; reason: string }[] = [];
  private readonly events: QueueEvents;

  constructor(redisUrl: string, queue: string) {
    const { hostname, port } = new URL(redisUrl);
    // connection options rather than an instance: BullMQ then owns the connection and closes it
    this.events = new QueueEvents(queue, { connection: { host: hostname, port: Number(port), maxRetriesPerRequest: null } });
    this.events.on("stalled", ({ jobId }) => this.stalled.push(jobId));
    this.events.on("failed", ({ jobId, failedReason }) => this.failed.push({ jobId, reason: failedReason }));
  }

  async ready(): Promise<void> {
    await this.events.waitUntilReady();
  }

  /** Failures whose reason names a stall or a lock. */
  stallFailures(): { jobId: string; reason: string }[] {
    return this.failed.filter((f) => /stall|lock/i.test(f.reason));
  }

  async close(): Promise<void> {
    await this.events.close();
  }
}

export const percentile = (values: number[], p: number): number => {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
};
