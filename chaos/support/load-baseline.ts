/**
 * "Redis memory returns to its baseline", made precise for the API-load scenario.
 *
 * What a moderation job leaves in Redis once its verdict is out:
 * - bounded by count: the finished job hash (CLIPGUARD_KEEP_COMPLETED / _FAILED, with its job
 *   data), its verdict-stream entry (CLIPGUARD_VERDICT_STREAM_MAXLEN, approximate trimming) and
 *   review-stream entry, and its events in BullMQ's event stream (~10,000 events);
 * - bounded by time: the verdict's once-marker `<stream>:published:<jobId>` (7 days: it makes a
 *   retried job publish nothing twice and lets `GET /v1/moderations/:id` find a trimmed job's
 *   verdict) and the image's embedding-cache entry `clipguard:imgemb:…` (CLIPGUARD_EMBEDDING_TTL);
 *   the API's rate-limit counter (one per key, its window);
 * - nothing else: `clipguard:ref:` keys are deleted with the verdict.
 *
 * So the baseline is taken after a warm-up that has filled the retained finished jobs and the
 * verdict stream, and the comparison subtracts (measured with MEMORY USAGE) the keys that were
 * added with a TTL and the growth of count-bounded streams that are still within their caps
 * (BullMQ's event stream takes ~2,000 jobs to fill; the full profile's warm-up fills it, the
 * quick one's does not). What remains, the residual, must be within a tolerance; any key added
 * without a TTL is a leak, and so is a bounded stream past its cap.
 */
import type { Redis } from "ioredis";
import { censusChanges, memoryInfo, takeCensus, type RedisCensus } from "./load-redis-census.js";

/** The per-job keys that expire by design, as the criteria text names them. */
export const PER_JOB_EXPIRING = ["verdict once-markers (7 days)", "image-embedding cache entries (CLIPGUARD_EMBEDDING_TTL)"];

/**
 * Residual tolerance: the fixed part covers what no key accounts for (the keyspace and expires
 * hash tables doubling as keys are added, allocator rounding); the proportional part covers the
 * approximate trimming of the streams (`MAXLEN ~` keeps whole 100-entry nodes).
 */
export const TOLERANCE_FIXED_BYTES = 512 * 1024;
export const TOLERANCE_FRACTION = 0.02;

export interface SettledMeasurement extends RedisCensus {
  /** used_memory samples taken after settling. */
  samples: number[];
}

/**
 * used_memory once Redis has settled (its client cron shrinks the query buffers of clients idle
 * for 2 s; the median of three samples), then the key census.
 */
export async function measureSettled(redis: Redis): Promise<SettledMeasurement> {
  await new Promise((resolve) => setTimeout(resolve, 2_500));
  const samples: Record<string, number>[] = [];
  for (let i = 0; i < 3; i++) {
    samples.push(await memoryInfo(redis));
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  const [, median] = [...samples].sort((a, b) => (a["used_memory"] ?? 0) - (b["used_memory"] ?? 0));
  const census = await takeCensus(redis);
  return { ...census, usedMemory: median?.["used_memory"] ?? 0, memory: median ?? {}, samples: samples.map((s) => s["used_memory"] ?? 0) };
}

/** A stream trimmed to a length by design: its growth is not a leak while it stays under `maxEntries`. */
export interface BoundedStream {
  key: string;
  maxEntries: number;
}

/** Entries `XADD MAXLEN ~` may keep over the cap: it trims whole nodes (stream-node-max-entries, 100). */
export const APPROXIMATE_TRIM_SLACK = 100;

export interface BaselineComparison {
  /** MEMORY USAGE of the keys added with a TTL. */
  expiringBytes: number;
  /** Growth of the bounded streams (within their caps). */
  boundedBytes: number;
  /** Bounded streams past their cap (+ slack) after the drain. */
  overCap: string[];
  expiringBytesPerJob: number;
  /** used_memory after − baseline − expiringBytes − boundedBytes. */
  residual: number;
  tolerance: number;
  /** Keys added without a TTL (0 unless something leaks). */
  unboundedKeys: number;
  /** `clipguard:ref:` keys left (must be 0 once every job has its verdict). */
  refKeys: number;
  notes: string[];
}

export function compareToBaseline(
  baseline: SettledMeasurement,
  end: SettledMeasurement,
  jobs: number,
  bounded: readonly BoundedStream[],
): BaselineComparison {
  const changes = censusChanges(baseline, end);
  let expiringBytes = 0;
  let boundedBytes = 0;
  let unboundedKeys = 0;
  const overCap: string[] = [];
  const notes: string[] = [];
  for (const change of changes) {
    const withoutTtl = change.keys - change.expiring;
    const stream = bounded.find((b) => b.key === change.shape);
    if (stream !== undefined) {
      const entries = end.groups.get(stream.key)?.entries ?? 0;
      if (entries > stream.maxEntries + APPROXIMATE_TRIM_SLACK) overCap.push(`${stream.key}: ${entries} entries, cap ${stream.maxEntries}`);
      else boundedBytes += change.bytes;
    } else if (change.keys > 0 && withoutTtl === 0) {
      expiringBytes += change.bytes;
    }
    if (withoutTtl > 0) unboundedKeys += withoutTtl;
  }
  const describe = (c: (typeof changes)[number]) =>
    `\`${c.shape}\` ${c.keys >= 0 ? "+" : ""}${c.keys} keys (${c.expiring} with TTL), ${c.entries >= 0 ? "+" : ""}${c.entries} entries, ${(c.bytes / 1024).toFixed(1)} KiB`;
  const shown = changes.filter((c) => Math.abs(c.bytes) >= 1024 || c.keys !== 0);
  notes.push(`Redis keys after the drain compared with the baseline: ${shown.length === 0 ? "no change" : shown.map(describe).join("; ")}.`);
  const parts = Object.keys(end.memory)
    .filter((field) => field !== "used_memory")
    .map((field) => `${field} ${(((end.memory[field] ?? 0) - (baseline.memory[field] ?? 0)) / 1024).toFixed(1)} KiB`);
  notes.push(`INFO memory, after the drain minus the baseline: used_memory ${((end.usedMemory - baseline.usedMemory) / 1024).toFixed(1)} KiB (${parts.join(", ")}).`);
  const residual = end.usedMemory - baseline.usedMemory - expiringBytes - boundedBytes;
  const tolerance = TOLERANCE_FIXED_BYTES + TOLERANCE_FRACTION * baseline.usedMemory;
  const refKeys = [...end.groups.values()].filter((g) => g.shape.startsWith("clipguard:ref:")).reduce((n, g) => n + g.keys, 0);
  return { expiringBytes, boundedBytes, overCap, expiringBytesPerJob: jobs === 0 ? 0 : expiringBytes / jobs, residual, tolerance, unboundedKeys, refKeys, notes };
}
