/**
 * Re-scoring without re-inference: the verdicts of a window of the verdict stream are judged
 * again from the image embeddings kept in Redis, against another compiled policy set, and the
 * verdicts whose decision changed (for the image or any policy) are appended to the rescore
 * stream. The image tower is never called: this module has no image embedder.
 */
import type { Redis } from "ioredis";
import { modelInputSize, type SamplingOptions } from "../clip/crop-plan.js";
import type { PreprocessConfig } from "../clip/types.js";
import type { JobVerdict } from "../shared/job-schema.js";
import type { PolicyVerdict } from "../shared/verdict.js";
import type { CompiledPolicySet } from "./compiled-policies.js";
import { entryServes, samplingKey, type ImageEmbeddingCache, type StoredEmbeddings } from "./image-embedding-cache.js";
import { judgeEmbeddings, verdictFields, type FrameCombine } from "./image-judgement.js";
import { windowStart, type RescoreWindow } from "./rescore-window.js";

/** A verdict in the rescore stream: the new verdict, naming the policy version it was re-judged from. */
export type RescoredVerdict = JobVerdict & { rescoredFrom: string; rescoredAt: string };

export interface RescoreOptions {
  redis: Redis;
  /** Read from (CLIPGUARD_VERDICT_STREAM). */
  verdictStream: string;
  /** Changed verdicts go here (CLIPGUARD_RESCORE_STREAM), fields `jobId`, `oldDecision`, `newDecision`, `verdict`. */
  rescoreStream: string;
  /** Approximate length kept of the rescore stream. */
  maxLen: number;
  cache: ImageEmbeddingCache;
  /** Must match the workers' (the cache key includes them). */
  sampling: SamplingOptions;
  combine: FrameCombine;
  /** The new policy set, compiled with the same model as the embeddings. */
  compiled: CompiledPolicySet;
  preprocess: Pick<PreprocessConfig, "cropWidth" | "cropHeight">;
  window: RescoreWindow;
  /** Entries read per XRANGE. @default 500 */
  pageSize?: number;
}

export interface RescoreSummary {
  /** The XRANGE bounds read: the window's start and the newest entry when the run began. */
  window: { start: string; end: string };
  policyVersion: string;
  /** Judged verdicts in the window (error verdicts are not counted: they have no embeddings). */
  seen: number;
  changed: number;
  unchanged: number;
  /** Verdicts that could not be re-judged without the image tower. */
  skipped: number;
  skippedReasons: {
    /** The embeddings are gone (CLIPGUARD_EMBEDDING_TTL passed, or never stored). */
    expired: number;
    /** The verdict came from another model than the one loaded. */
    otherModel: number;
    /** The new policies want tiles and the stored embeddings have none. */
    untiled: number;
  };
  /** Error verdicts in the window, left alone. */
  errors: number;
}

function fieldMap(fields: readonly string[]): Map<string, string> {
  const values = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) values.set(fields[i] ?? "", fields[i + 1] ?? "");
  return values;
}

function parseVerdict(raw: string | undefined): JobVerdict | undefined {
  if (raw === undefined) return undefined;
  try {
    const value: unknown = JSON.parse(raw);
    if (typeof value !== "object" || value === null) return undefined;
    const v = value as Partial<JobVerdict>;
    if (typeof v.decision !== "string" || !Array.isArray(v.policies) || typeof v.policyVersion !== "string") return undefined;
    return value as JobVerdict;
  } catch {
    return undefined;
  }
}

/** The decisions of a verdict. */
export interface DecisionSummary {
  decision: string;
  policies: readonly Pick<PolicyVerdict, "id" | "decision">[];
}

/** Whether the image decision or any policy decision differs (a policy judged on one side only counts as `allow` on the other). */
export function decisionsChanged(before: DecisionSummary, after: DecisionSummary): boolean {
  if (before.decision !== after.decision) return true;
  const old = new Map(before.policies.map((p) => [p.id, p.decision]));
  const now = new Map(after.policies.map((p) => [p.id, p.decision]));
  for (const id of new Set([...old.keys(), ...now.keys()])) if ((old.get(id) ?? "allow") !== (now.get(id) ?? "allow")) return true;
  return false;
}

/**
 * Re-judges every verdict of the window against `options.compiled` and publishes the changed ones.
 * Every verdict of a job is judged against every policy of the new set (a job's `policies`
 * subset is not recorded in its verdict).
 */
export async function rescoreWindow(options: RescoreOptions): Promise<RescoreSummary> {
  const { redis, compiled } = options;
  const start = windowStart(options.window);
  const newest = await redis.xrevrange(options.verdictStream, "+", "-", "COUNT", 1);
  const end = newest[0]?.[0] ?? "0-0";
  const summary: RescoreSummary = {
    window: { start, end },
    policyVersion: compiled.version,
    seen: 0,
    changed: 0,
    unchanged: 0,
    skipped: 0,
    skippedReasons: { expired: 0, otherModel: 0, untiled: 0 },
    errors: 0,
  };
  if (newest.length === 0) return summary;
  const key = samplingKey(options.sampling);
  const wantTiles = compiled.policies.some((p) => p.tiles);
  const inputSize = modelInputSize(options.preprocess);
  const entries = new Map<string, Promise<StoredEmbeddings | undefined>>();
  const lookup = (sha256: string) => {
    let found = entries.get(sha256);
    if (found === undefined) {
      found = options.cache.get(compiled.fingerprint, sha256, key);
      entries.set(sha256, found);
    }
    return found;
  };
  const skip = (reason: keyof RescoreSummary["skippedReasons"]) => {
    summary.skipped++;
    summary.skippedReasons[reason]++;
  };

  let from = start;
  for (;;) {
    const page = await redis.xrange(options.verdictStream, from, end, "COUNT", options.pageSize ?? 500);
    for (const [id, fields] of page) {
      from = `(${id}`;
      const old = parseVerdict(fieldMap(fields).get("verdict"));
      if (old === undefined || old.decision === "error" || old.imageSha256 === undefined) {
        summary.errors++;
        continue;
      }
      summary.seen++;
      if (old.model.fingerprint !== compiled.fingerprint) {
        skip("otherModel");
        continue;
      }
      const stored = await lookup(old.imageSha256);
      if (stored === undefined) {
        skip("expired");
        continue;
      }
      if (!entryServes(stored, wantTiles, inputSize, options.sampling)) {
        skip("untiled");
        continue;
      }
      const fields2 = verdictFields(judgeEmbeddings(compiled, stored, undefined, options.combine));
      if (!decisionsChanged(old, fields2)) {
        summary.unchanged++;
        continue;
      }
      summary.changed++;
      const { frames: _oldFrames, ...rest } = old;
      const verdict: RescoredVerdict = {
        ...rest,
        ...fields2,
        policyVersion: compiled.version,
        rescoredFrom: old.policyVersion,
        rescoredAt: new Date().toISOString(),
      };
      await redis.xadd(
        options.rescoreStream,
        "MAXLEN",
        "~",
        String(options.maxLen),
        "*",
        "jobId",
        old.jobId,
        "oldDecision",
        old.decision,
        "newDecision",
        verdict.decision,
        "verdict",
        JSON.stringify(verdict),
      );
    }
    if (page.length < (options.pageSize ?? 500)) break;
  }
  return summary;
}
