/**
 * What the crash and Redis-restart scenarios count: verdict-stream entries per job, BullMQ's own
 * run counters per job, and unique images so no job is answered from the image-embedding cache.
 */
import type { Redis } from "ioredis";
import { solidPng } from "../../test/support/fixtures.js";

/** Distinct small PNGs (a colour per index, unique below 4096). */
export async function uniquePngs(count: number): Promise<Buffer[]> {
  const images: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    images.push(await solidPng([(i & 0xf) * 16 + 8, ((i >> 4) & 0xf) * 16 + 8, ((i >> 8) & 0xf) * 16 + 8], 64, 48));
  }
  return images;
}

export interface StreamTally {
  /** Entries per job id. */
  counts: Map<string, number>;
  /** Decision of the first entry per job id. */
  decisions: Map<string, string>;
  /** Verdict JSON of the first entry per job id. */
  verdicts: Map<string, string>;
  entries: number;
}

/** Reads the whole verdict stream and counts its entries per job id. */
export async function tallyStream(redis: Redis, stream: string): Promise<StreamTally> {
  const counts = new Map<string, number>();
  const decisions = new Map<string, string>();
  const verdicts = new Map<string, string>();
  let entries = 0;
  let from = "-";
  for (;;) {
    const page = await redis.xrange(stream, from, "+", "COUNT", 1000);
    for (const [, fields] of page) {
      const get = (name: string) => fields[fields.indexOf(name) + 1];
      const jobId = get("jobId") ?? "";
      counts.set(jobId, (counts.get(jobId) ?? 0) + 1);
      if (!decisions.has(jobId)) {
        decisions.set(jobId, get("decision") ?? "");
        verdicts.set(jobId, get("verdict") ?? "");
      }
      entries++;
    }
    if (page.length < 1000) break;
    from = `(${page[page.length - 1]![0]}`;
  }
  return { counts, decisions, verdicts, entries };
}

/** Jobs with no entry (lost) and with more than one (duplicated), over the given ids. */
export function lostAndDuplicated(ids: Iterable<string>, tally: StreamTally): { lost: string[]; duplicated: string[] } {
  const lost: string[] = [];
  const duplicated: string[] = [];
  for (const id of ids) {
    const n = tally.counts.get(id) ?? 0;
    if (n === 0) lost.push(id);
    if (n > 1) duplicated.push(id);
  }
  return { lost, duplicated };
}

export interface RunCounters {
  /** Jobs BullMQ started more than once (`ats` > 1). */
  rerunJobs: number;
  /** Starts beyond the first, over all jobs. */
  extraStarts: number;
  /** Times a job was found stalled (`stc`), over all jobs. */
  stalls: number;
  /** Failed attempts (`atm` beyond the final one), over all jobs. */
  failedAttempts: number;
  /** Job hashes no longer present (removed by retention), so not counted. */
  missing: number;
  /** Jobs in BullMQ's failed set. */
  failed: string[];
}

/** BullMQ's per-job counters (attempts started, stalls, attempts made), read from the job hashes. */
export async function runCounters(redis: Redis, prefix: string, queue: string, ids: readonly string[]): Promise<RunCounters> {
  const result: RunCounters = { rerunJobs: 0, extraStarts: 0, stalls: 0, failedAttempts: 0, missing: 0, failed: [] };
  for (let i = 0; i < ids.length; i += 500) {
    const batch = ids.slice(i, i + 500);
    const pipeline = redis.pipeline();
    for (const id of batch) {
      pipeline.hmget(`${prefix}:${queue}:${id}`, "ats", "stc", "atm");
      pipeline.zscore(`${prefix}:${queue}:failed`, id);
    }
    const replies = (await pipeline.exec()) ?? [];
    batch.forEach((id, k) => {
      const [err, reply] = replies[2 * k] ?? [null, []];
      const [ats, stc, atm] = (err === null ? reply : []) as (string | null)[];
      const failedScore = replies[2 * k + 1]?.[1];
      if (ats === null || ats === undefined) {
        result.missing++;
        return;
      }
      const started = Number(ats);
      if (started > 1) result.rerunJobs++;
      result.extraStarts += Math.max(0, started - 1);
      result.stalls += Number(stc ?? 0);
      result.failedAttempts += Math.max(0, Number(atm ?? 1) - 1);
      if (failedScore !== null && failedScore !== undefined) result.failed.push(id);
    });
  }
  return result;
}
