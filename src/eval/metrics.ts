/**
 * The calibration math of `clipguard eval`: plain functions over scores and binary labels, no I/O.
 *
 * An image is flagged at threshold `t` when `score >= t`, as `decide` does in production, so every
 * operating point here is "flag everything scoring at least this score"; images with equal scores
 * are always flagged together (ties are never split).
 */

/** Counts at one threshold. `positives = tp + fn`, `negatives = fp + tn`. */
export interface Confusion {
  tp: number;
  fp: number;
  fn: number;
  tn: number;
}

/** One row of the precision/recall table. */
export interface OperatingPoint extends Confusion {
  threshold: number;
  /** `tp / (tp + fp)`; 1 when nothing is flagged (no false claims made), as sklearn's curve ends. */
  precision: number;
  /** `tp / (tp + fn)`; 0 when there are no positives. */
  recall: number;
  /** Harmonic mean of precision and recall; 0 when both are 0. */
  f1: number;
}

function checkInput(scores: readonly number[], labels: readonly boolean[]): void {
  if (scores.length !== labels.length) throw new RangeError(`${scores.length} scores but ${labels.length} labels`);
  for (const s of scores) if (!Number.isFinite(s)) throw new RangeError(`scores must be finite numbers, got ${s}`);
}

function point(threshold: number, c: Confusion): OperatingPoint {
  const flagged = c.tp + c.fp;
  const precision = flagged === 0 ? 1 : c.tp / flagged;
  const recall = c.tp + c.fn === 0 ? 0 : c.tp / (c.tp + c.fn);
  const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  return { threshold, ...c, precision, recall, f1 };
}

/** The confusion counts when images scoring at least `threshold` are flagged. */
export function confusionAt(scores: readonly number[], labels: readonly boolean[], threshold: number): Confusion {
  checkInput(scores, labels);
  const c: Confusion = { tp: 0, fp: 0, fn: 0, tn: 0 };
  scores.forEach((score, i) => {
    const flagged = score >= threshold;
    if (labels[i] === true) {
      if (flagged) c.tp++;
      else c.fn++;
    } else if (flagged) c.fp++;
    else c.tn++;
  });
  return c;
}

/** {@link confusionAt} with precision, recall and F1. */
export function operatingPointAt(scores: readonly number[], labels: readonly boolean[], threshold: number): OperatingPoint {
  return point(threshold, confusionAt(scores, labels, threshold));
}

/**
 * The whole precision/recall curve: one point per distinct score, thresholds descending, each
 * flagging every image scoring at least that score. Empty when there are no scores.
 */
export function operatingPoints(scores: readonly number[], labels: readonly boolean[]): OperatingPoint[] {
  checkInput(scores, labels);
  const order = scores.map((score, i) => ({ score, positive: labels[i] === true })).sort((a, b) => b.score - a.score);
  const positives = order.filter((o) => o.positive).length;
  const negatives = order.length - positives;
  const points: OperatingPoint[] = [];
  let tp = 0;
  let fp = 0;
  for (let i = 0; i < order.length; i++) {
    const current = order[i];
    if (current === undefined) break;
    if (current.positive) tp++;
    else fp++;
    // emit once per run of equal scores, after the whole run is counted
    if (order[i + 1]?.score !== current.score) {
      points.push(point(current.score, { tp, fp, fn: positives - tp, tn: negatives - fp }));
    }
  }
  return points;
}

/** {@link operatingPointAt} for each threshold, in the order given. */
export function prTable(scores: readonly number[], labels: readonly boolean[], thresholds: readonly number[]): OperatingPoint[] {
  return thresholds.map((t) => operatingPointAt(scores, labels, t));
}

/**
 * Area under the ROC curve as the Mann–Whitney rank statistic: the probability that a random
 * positive scores above a random negative, ties counting one half (average ranks). `null` when
 * there are no positives or no negatives, where it is undefined.
 */
export function rocAuc(scores: readonly number[], labels: readonly boolean[]): number | null {
  checkInput(scores, labels);
  const positives = labels.filter(Boolean).length;
  const negatives = labels.length - positives;
  if (positives === 0 || negatives === 0) return null;
  const order = scores.map((score, i) => ({ score, positive: labels[i] === true })).sort((a, b) => a.score - b.score);
  let positiveRankSum = 0;
  let i = 0;
  while (i < order.length) {
    let j = i;
    while (j + 1 < order.length && order[j + 1]?.score === order[i]?.score) j++;
    // ranks i+1 … j+1 share their average
    const averageRank = (i + 1 + (j + 1)) / 2;
    for (let k = i; k <= j; k++) if (order[k]?.positive) positiveRankSum += averageRank;
    i = j + 1;
  }
  return (positiveRankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}

/**
 * Average precision as scikit-learn's `average_precision_score` computes it: the sum over the
 * curve's distinct thresholds (descending) of `(recall_k − recall_{k−1}) × precision_k`, without
 * interpolation. `null` when there are no positives.
 */
export function averagePrecision(scores: readonly number[], labels: readonly boolean[]): number | null {
  if (!labels.some(Boolean)) {
    checkInput(scores, labels);
    return null;
  }
  let previousRecall = 0;
  let ap = 0;
  for (const p of operatingPoints(scores, labels)) {
    ap += (p.recall - previousRecall) * p.precision;
    previousRecall = p.recall;
  }
  return ap;
}

/** A suggested threshold: where it cuts, and the counts it gives on the labelled set. */
export interface Suggestion extends OperatingPoint {
  /** The point of the curve it was chosen from (the lowest score still flagged). */
  lowestFlaggedScore: number;
}

/**
 * A threshold in `(below, at]` that reads well in YAML: the midpoint of the gap between the lowest
 * flagged score `at` and the next lower score `below`, rounded to the fewest decimals (2 or more)
 * that keep it inside the gap. On the labelled set it flags exactly what `at` flags; on new images
 * it keeps the largest margin to both classes. Without a lower score it is `at` itself.
 */
export function cutBetween(below: number | undefined, at: number): number {
  if (below === undefined || !(below < at)) return at;
  const mid = (below + at) / 2;
  for (let decimals = 2; decimals <= 12; decimals++) {
    const scale = 10 ** decimals;
    const t = Math.round(mid * scale) / scale;
    if (t > below && t <= at) return t;
  }
  return mid;
}

function suggestionAt(points: readonly OperatingPoint[], index: number): Suggestion | null {
  const chosen = points[index];
  if (chosen === undefined) return null;
  const threshold = cutBetween(points[index + 1]?.threshold, chosen.threshold);
  return { ...chosen, threshold, lowestFlaggedScore: chosen.threshold };
}

/**
 * The `review` threshold: the highest one whose recall reaches `targetRecall` (so the fewest
 * false positives among those that catch enough). `null` without positives.
 *
 * @param points from {@link operatingPoints}
 */
export function suggestForRecall(points: readonly OperatingPoint[], targetRecall: number): Suggestion | null {
  if (points.length === 0 || (points[0]?.tp ?? 0) + (points[0]?.fn ?? 0) === 0) return null;
  // tolerance: 0.95 × 20 is 19 but recall 19/20 computes to 0.95 exactly only by luck
  const index = points.findIndex((p) => p.recall >= targetRecall - 1e-12);
  return suggestionAt(points, index);
}

/**
 * The `block` threshold: among thresholds whose precision reaches `targetPrecision`, the one with
 * the highest recall (the highest such threshold when several share that recall). `null` when no
 * threshold that flags a positive is precise enough.
 *
 * @param points from {@link operatingPoints}
 */
export function suggestForPrecision(points: readonly OperatingPoint[], targetPrecision: number): Suggestion | null {
  let best = -1;
  points.forEach((p, i) => {
    if (p.tp === 0 || p.precision < targetPrecision - 1e-12) return;
    if (best === -1 || p.recall > (points[best]?.recall ?? 0)) best = i;
  });
  return suggestionAt(points, best);
}

/**
 * `count` evenly spaced thresholds from the lowest to the highest score, rounded to 3 decimals and
 * deduplicated, ascending: the rows of a readable table.
 */
export function gridThresholds(scores: readonly number[], count = 11): number[] {
  if (scores.length === 0) return [];
  const lo = Math.min(...scores);
  const hi = Math.max(...scores);
  const steps = Math.max(1, count - 1);
  const grid = Array.from({ length: steps + 1 }, (_, i) => Math.round((lo + ((hi - lo) * i) / steps) * 1000) / 1000);
  return [...new Set(grid)].sort((a, b) => a - b);
}

/** Counts of `values` in `bins` equal bins over `[lo, hi]` (the last bin includes `hi`). */
export function histogram(values: readonly number[], lo: number, hi: number, bins: number): number[] {
  const counts = new Array<number>(bins).fill(0);
  const width = (hi - lo) / bins;
  for (const v of values) {
    if (v < lo || v > hi) continue;
    const bin = width > 0 ? Math.min(bins - 1, Math.floor((v - lo) / width)) : 0;
    counts[bin] = (counts[bin] ?? 0) + 1;
  }
  return counts;
}
