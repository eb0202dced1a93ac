/**
 * The shape of `report.json`, and how an evaluation becomes one. Rates are rounded to 4 decimals
 * and scores to 6 for reading; thresholds are written exactly as suggested or configured.
 */
import type { ModelInfo } from "../clip/clip-model.js";
import type { EmbeddingCounts, FailedImage } from "./image-embeddings.js";
import type { LabelFormat } from "./labelled-set.js";
import type { OperatingPoint, Suggestion } from "./metrics.js";
import type { NegativesMode, PolicyEvaluation, ScoredExample, Targets } from "./policy-evaluation.js";
import type { Comparison } from "./prompt-comparison.js";
import type { ThresholdChange, ThresholdSkip } from "./suggested-policies.js";

/** Bumped when a field changes meaning or disappears. */
export const REPORT_FORMAT = 1;

export type ReportPoint = OperatingPoint;

export interface PolicyReport extends Omit<PolicyEvaluation, "curve" | "scores"> {
  /** The PNG of this policy, relative to the report folder. */
  chart: string;
}

export interface EvalReport {
  format: number;
  createdAt: string;
  model: ModelInfo;
  policies: { file: string; version: string };
  labels: { source: string; format: LabelFormat; images: number; benign: number; byPolicy: Record<string, number> };
  /** Which images count as negatives of a policy (see `policy-evaluation.ts`). */
  negatives: NegativesMode;
  targets: Targets;
  /** `embedded` counts vision-tower inferences in this run; a re-run on a warm cache has 0. */
  images: EmbeddingCounts;
  cache: { dir: string };
  /** Images left out because they could not be read or decoded. */
  failures: FailedImage[];
  results: PolicyReport[];
  suggestedPolicies?: { file: string; changes: ThresholdChange[]; skipped: ThresholdSkip[] };
  compare?: Comparison;
  /** Every evaluated image with its label and scores. */
  examples: { path: string; sha256: string; policyIds: readonly string[]; scores: Record<string, number> }[];
}

const r4 = (x: number): number => Math.round(x * 1e4) / 1e4;
const r6 = (x: number): number => Math.round(x * 1e6) / 1e6;
const r4n = (x: number | null): number | null => (x === null ? null : r4(x));

function roundPoint<T extends OperatingPoint>(p: T): T {
  return { ...p, precision: r4(p.precision), recall: r4(p.recall), f1: r4(p.f1) };
}
const roundOptional = <T extends OperatingPoint>(p: T | null): T | null => (p === null ? null : roundPoint(p));

/** The JSON form of one policy's evaluation (without the full curve and raw score lists). */
export function policyReport(e: PolicyEvaluation): PolicyReport {
  const { curve: _curve, scores: _scores, ...rest } = e;
  const suggested: { review: Suggestion | null; block: Suggestion | null } = {
    review: roundOptional(e.suggested.review),
    block: roundOptional(e.suggested.block),
  };
  return {
    ...rest,
    auc: r4n(e.auc),
    averagePrecision: r4n(e.averagePrecision),
    current: { review: roundOptional(e.current.review), block: roundOptional(e.current.block) },
    suggested,
    table: e.table.map(roundPoint),
    hardest: {
      positives: e.hardest.positives.map((h) => ({ ...h, score: r6(h.score) })),
      negatives: e.hardest.negatives.map((h) => ({ ...h, score: r6(h.score) })),
    },
    chart: chartFileName(e.id),
  };
}

/** Policy ids are `[a-z0-9_-]+`, so they are safe file names. */
export function chartFileName(id: string): string {
  return `${id}.png`;
}

export function roundComparison(c: Comparison): Comparison {
  const pair = (x: { auc: number | null; averagePrecision: number | null } | null) =>
    x === null ? null : { auc: r4n(x.auc), averagePrecision: r4n(x.averagePrecision) };
  return {
    ...c,
    policies: c.policies.map((p) => ({
      ...p,
      base: pair(p.base),
      other: pair(p.other),
      aucDelta: r4n(p.aucDelta),
      averagePrecisionDelta: r4n(p.averagePrecisionDelta),
      prompts: p.prompts.map((q) => ({ ...q, baseAuc: r4n(q.baseAuc), otherAuc: r4n(q.otherAuc) })),
    })),
  };
}

export function reportExamples(examples: readonly ScoredExample[]): EvalReport["examples"] {
  return examples.map((e) => ({
    path: e.path,
    sha256: e.sha256,
    policyIds: e.policyIds,
    scores: Object.fromEntries(Object.entries(e.scores).map(([id, s]) => [id, r6(s)])),
  }));
}
