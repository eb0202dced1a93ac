import type { Redis } from "ioredis";
import { publishedMarkerKey, type JobVerdict } from "../shared/job-schema.js";

/**
 * Reading the verdict stream (CLIPGUARD_VERDICT_STREAM). The worker appends one entry per job,
 * exactly once, with the fields `jobId`, `decision` and `verdict` (the JobVerdict as JSON).
 */

/** One stream entry as a downstream consumer sees it. */
export interface VerdictEntry {
  /** The stream entry id (`<ms>-<seq>`); pass it as `from` to read on after this entry. */
  id: string;
  jobId: string;
  decision: string;
  /** The parsed `verdict` field; the raw string when it is not JSON (never written by clipguard). */
  verdict: JobVerdict | string;
}

/** `<ms>-<seq>`, `<ms>`, `0`, or `$` (only entries added from now on). */
export const STREAM_ID = /^(\$|\d+(-\d+)?)$/;

export { publishedMarkerKey };

export function parseVerdictEntry(id: string, fields: string[]): VerdictEntry {
  const values = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) values.set(fields[i] ?? "", fields[i + 1] ?? "");
  const raw = values.get("verdict") ?? "";
  let verdict: JobVerdict | string = raw;
  try {
    const parsed: unknown = JSON.parse(raw);
    if (typeof parsed === "object" && parsed !== null) verdict = parsed as JobVerdict;
  } catch {
    // keep the raw text: a consumer should still see the entry
  }
  return { id, jobId: values.get("jobId") ?? "", decision: values.get("decision") ?? "", verdict };
}

/** The verdict the worker published for `jobId`, or undefined (not published yet, or trimmed). */
export async function findPublishedVerdict(redis: Redis, stream: string, jobId: string): Promise<JobVerdict | undefined> {
  const entryId = await redis.get(publishedMarkerKey(stream, jobId));
  if (entryId === null) return undefined;
  const entries = await redis.xrange(stream, entryId, entryId);
  const first = entries[0];
  if (first === undefined) return undefined;
  const entry = parseVerdictEntry(first[0], first[1]);
  return typeof entry.verdict === "object" ? entry.verdict : undefined;
}

/** The id of the newest entry, or `0-0` for an empty stream: "every entry after now". */
export async function lastEntryId(redis: Redis, stream: string): Promise<string> {
  const newest = await redis.xrevrange(stream, "+", "-", "COUNT", 1);
  return newest[0]?.[0] ?? "0-0";
}

export interface ReadVerdictsOptions {
  /** Most entries returned by one call. @default 100 */
  count?: number;
  /** Block up to this long for new entries when there are none (XREAD BLOCK). @default no blocking */
  blockMs?: number;
}

/** Entries after `from` (exclusive), oldest first; empty when none arrived (within `blockMs`). */
export async function readVerdictEntries(redis: Redis, stream: string, from: string, options: ReadVerdictsOptions = {}): Promise<VerdictEntry[]> {
  const count = options.count ?? 100;
  const reply =
    options.blockMs === undefined
      ? await redis.xread("COUNT", count, "STREAMS", stream, from)
      : await redis.xread("COUNT", count, "BLOCK", options.blockMs, "STREAMS", stream, from);
  const entries: VerdictEntry[] = [];
  for (const [, items] of reply ?? []) {
    for (const [id, fields] of items) entries.push(parseVerdictEntry(id, fields));
  }
  return entries;
}
