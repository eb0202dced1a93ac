/**
 * Scores of the labelled images → per-policy metrics and suggested thresholds. No I/O.
 *
 * Positives of a policy are the images labelled with it. Negatives are, by default (`all`), every
 * other labelled image: benign ones *and* those labelled only with other policies, because in
 * production every policy sees every image, and a `weapons` threshold that fires on the `drugs`
 * examples is a false positive a reviewer pays for. `benign` restricts negatives to benign
 * images, for sets where the policy folders were not labelled for each other (an image under
 * `violence/` that also shows a weapon would otherwise count against `weapons`).
 */
import type { CompiledPolicySet } from "../policies/index.js";
import type { Policy } from "../policies/index.js";
import type { EmbeddedImage } from "./image-embeddings.js";
import {
  averagePrecision,
  gridThresholds,
  operatingPointAt,
  operatingPoints,
  prTable,
  rocAuc,
  suggestForPrecision,
  suggestForRecall,
  type OperatingPoint,
  type Suggestion,
} from "./metrics.js";

export const NEGATIVES_MODES = ["all", "benign"] as const;
export type NegativesMode = (typeof NEGATIVES_MODES)[number];

export interface Targets {
  /** Recall the suggested `review` threshold must reach. @default 0.95 */
  reviewRecall: number;
  /** Precision the suggested `block` threshold must reach. @default 0.98 */
  blockPrecision: number;
}

export const DEFAULT_TARGETS: Readonly<Targets> = Object.freeze({ reviewRecall: 0.95, blockPrecision: 0.98 });

/** One labelled image with its score under every policy. */
export interface ScoredExample {
  path: string;
  sha256: string;
  policyIds: readonly string[];
  /** Policy id → score, full precision. */
  scores: Record<string, number>;
}

/** Score every embedded image against every policy of `compiled`. */
export function scoreExamples(compiled: CompiledPolicySet, embedded: readonly EmbeddedImage[]): ScoredExample[] {
  return embedded.map(({ image, sha256, embedding }) => ({
    path: image.path,
    sha256,
    policyIds: image.policyIds,
    scores: Object.fromEntries(compiled.judge(embedding).policies.map((p) => [p.id, p.score])),
  }));
}

export type ExampleRole = "positive" | "benign" | "other";

/** How an example counts for policy `id`; `undefined` when it is left out (`benign` mode). */
export function roleFor(example: { policyIds: readonly string[] }, id: string, mode: NegativesMode): ExampleRole | undefined {
  if (example.policyIds.includes(id)) return "positive";
  if (example.policyIds.length === 0) return "benign";
  return mode === "all" ? "other" : undefined;
}

/** Scores of one policy, split by role (for the histograms). */
export interface PolicyScores {
  positive: number[];
  benign: number[];
  other: number[];
}

export interface ExampleScore {
  path: string;
  score: number;
}

export interface PolicyEvaluation {
  id: string;
  description: string;
  scoring: Policy["scoring"];
  positives: number;
  /** `benign + otherPolicies`. */
  negatives: number;
  benign: number;
  /** Negatives labelled with other policies only (0 in `benign` mode). */
  otherPolicies: number;
  /** `null` without positives or negatives. */
  auc: number | null;
  /** `null` without positives. */
  averagePrecision: number | null;
  /** The thresholds in the policies file, with their counts on this set. */
  current: { review: OperatingPoint | null; block: OperatingPoint | null };
  suggested: { review: Suggestion | null; block: Suggestion | null };
  /** Why a suggestion is missing or was adjusted. */
  notes: string[];
  /** Precision/recall/F1 at evenly spaced thresholds plus the current and suggested ones, ascending. */
  table: OperatingPoint[];
  /** Lowest-scoring positives and highest-scoring negatives: where mislabels and hard cases hide. */
  hardest: { positives: ExampleScore[]; negatives: ExampleScore[] };
  /** Every point of the curve, thresholds descending (for the chart; not written to report.json). */
  curve: OperatingPoint[];
  scores: PolicyScores;
}

const HARDEST = 5;

/** Metrics and suggestions for one policy over the scored examples. */
export function evaluatePolicy(policy: Policy, examples: readonly ScoredExample[], mode: NegativesMode, targets: Targets): PolicyEvaluation {
  const scores: PolicyScores = { positive: [], benign: [], other: [] };
  const values: number[] = [];
  const labels: boolean[] = [];
  const positives: ExampleScore[] = [];
  const negatives: ExampleScore[] = [];
  for (const example of examples) {
    const role = roleFor(example, policy.id, mode);
    const score = example.scores[policy.id];
    if (role === undefined || score === undefined) continue;
    scores[role].push(score);
    values.push(score);
    labels.push(role === "positive");
    (role === "positive" ? positives : negatives).push({ path: example.path, score });
  }

  const curve = operatingPoints(values, labels);
  const notes: string[] = [];
  if (scores.positive.length === 0) notes.push("no positive examples: label some images with this policy to calibrate it");
  if (scores.positive.length > 0 && values.length === scores.positive.length) notes.push("no negative examples: add benign images");

  let review = suggestForRecall(curve, targets.reviewRecall);
  const block = suggestForPrecision(curve, targets.blockPrecision);
  if (block === null && scores.positive.length > 0) {
    notes.push(`no threshold reaches precision ${targets.blockPrecision}: no block threshold suggested`);
  }
  if (review !== null && block !== null && review.threshold > block.threshold) {
    // the block threshold already catches the review target's share: a review band would be empty
    notes.push(`the block threshold already reaches recall ${targets.reviewRecall}: review suggested equal to block`);
    review = { ...block };
  }

  const current = {
    review: policy.thresholds.review === undefined ? null : operatingPointAt(values, labels, policy.thresholds.review),
    block: policy.thresholds.block === undefined ? null : operatingPointAt(values, labels, policy.thresholds.block),
  };
  const marks = [policy.thresholds.review, policy.thresholds.block, review?.threshold, block?.threshold].filter((t): t is number => t !== undefined);
  const tableThresholds = [...new Set([...gridThresholds(values), ...marks])].sort((a, b) => a - b);

  return {
    id: policy.id,
    description: policy.description,
    scoring: policy.scoring,
    positives: scores.positive.length,
    negatives: scores.benign.length + scores.other.length,
    benign: scores.benign.length,
    otherPolicies: scores.other.length,
    auc: rocAuc(values, labels),
    averagePrecision: averagePrecision(values, labels),
    current,
    suggested: { review, block },
    notes,
    table: prTable(values, labels, tableThresholds),
    hardest: {
      positives: positives.sort((a, b) => a.score - b.score).slice(0, HARDEST),
      negatives: negatives.sort((a, b) => b.score - a.score).slice(0, HARDEST),
    },
    curve,
    scores,
  };
}

/** {@link evaluatePolicy} for every policy of `compiled`, in file order. */
export function evaluatePolicies(
  compiled: CompiledPolicySet,
  examples: readonly ScoredExample[],
  mode: NegativesMode,
  targets: Targets,
): PolicyEvaluation[] {
  return compiled.policies.map((policy) => evaluatePolicy(policy, examples, mode, targets));
}
