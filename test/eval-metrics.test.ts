import { describe, expect, it } from "vitest";
import {
  averagePrecision,
  confusionAt,
  cutBetween,
  gridThresholds,
  histogram,
  operatingPoints,
  rocAuc,
  suggestForPrecision,
  suggestForRecall,
} from "../src/eval/metrics.js";
import { evaluatePolicy, type ScoredExample } from "../src/eval/policy-evaluation.js";
import type { Policy } from "../src/policies/index.js";

const T = true;
const F = false;

// Values computed by hand (and matching scikit-learn's roc_auc_score / average_precision_score).
const CASES: { name: string; scores: number[]; labels: boolean[]; auc: number | null; ap: number | null }[] = [
  // pairs (pos, neg): (.9,.8) (.9,.6) (.7,.6) won, (.7,.8) lost → 3/4; AP = .5×1 + .5×2/3
  { name: "interleaved", scores: [0.9, 0.8, 0.7, 0.6], labels: [T, F, T, F], auc: 0.75, ap: 5 / 6 },
  // the tie (.6 pos, .6 neg) counts one half → 3.5/4; AP: (.8: P1 R.5), (.6: P2/3 R1)
  { name: "tie across classes", scores: [0.8, 0.6, 0.6, 0.4], labels: [T, T, F, F], auc: 0.875, ap: 5 / 6 },
  { name: "all tied", scores: [0.5, 0.5, 0.5, 0.5], labels: [T, F, T, F], auc: 0.5, ap: 0.5 },
  { name: "separable", scores: [0.9, 0.8, 0.3, 0.2], labels: [T, T, F, F], auc: 1, ap: 1 },
  // descending: .9 F, .8 F, .2 T (P 1/3, R .5), .1 T (P 1/2, R 1) → .5/3 + .5/2
  { name: "inverted", scores: [0.1, 0.2, 0.8, 0.9], labels: [T, T, F, F], auc: 0, ap: 5 / 12 },
  { name: "no positives", scores: [0.1, 0.2], labels: [F, F], auc: null, ap: null },
  { name: "no negatives", scores: [0.1, 0.2], labels: [T, T], auc: null, ap: 1 },
  { name: "empty", scores: [], labels: [], auc: null, ap: null },
];

describe("rocAuc and averagePrecision", () => {
  it.each(CASES)("$name", ({ scores, labels, auc, ap }) => {
    const gotAuc = rocAuc(scores, labels);
    const gotAp = averagePrecision(scores, labels);
    if (auc === null) expect(gotAuc).toBeNull();
    else expect(gotAuc).toBeCloseTo(auc, 12);
    if (ap === null) expect(gotAp).toBeNull();
    else expect(gotAp).toBeCloseTo(ap, 12);
  });

  it("does not depend on the order of the input", () => {
    const scores = [0.3, 0.9, 0.6, 0.6, 0.1, 0.8];
    const labels = [F, T, T, F, F, T];
    const order = [5, 2, 0, 4, 1, 3];
    const s2 = order.map((i) => scores[i] as number);
    const l2 = order.map((i) => labels[i] as boolean);
    expect(rocAuc(s2, l2)).toBe(rocAuc(scores, labels));
    expect(averagePrecision(s2, l2)).toBe(averagePrecision(scores, labels));
  });

  it("refuses mismatched lengths and non-finite scores", () => {
    expect(() => rocAuc([0.1], [T, F])).toThrow(RangeError);
    expect(() => averagePrecision([Number.NaN, 0.2], [T, F])).toThrow(RangeError);
  });
});

describe("operatingPoints, confusionAt", () => {
  it("has one point per distinct score, thresholds descending, ties flagged together", () => {
    const points = operatingPoints([0.9, 0.8, 0.7, 0.6], [T, F, T, F]);
    expect(points.map(({ threshold, tp, fp, fn, tn }) => [threshold, tp, fp, fn, tn])).toEqual([
      [0.9, 1, 0, 1, 2],
      [0.8, 1, 1, 1, 1],
      [0.7, 2, 1, 0, 1],
      [0.6, 2, 2, 0, 0],
    ]);
    expect(points.map((p) => [p.precision, p.recall])).toEqual([
      [1, 0.5],
      [0.5, 0.5],
      [2 / 3, 1],
      [0.5, 1],
    ]);
    expect(points[2]?.f1).toBeCloseTo(0.8, 12); // 2 × (2/3) × 1 / (2/3 + 1)
    expect(operatingPoints([0.6, 0.6, 0.2], [T, F, F]).map((p) => [p.threshold, p.tp, p.fp])).toEqual([
      [0.6, 1, 1],
      [0.2, 1, 2],
    ]);
  });

  it.each([
    { threshold: 0.7, want: { tp: 2, fp: 1, fn: 0, tn: 1 } },
    { threshold: 0.75, want: { tp: 1, fp: 1, fn: 1, tn: 1 } },
    { threshold: 0.95, want: { tp: 0, fp: 0, fn: 2, tn: 2 } },
    { threshold: -1, want: { tp: 2, fp: 2, fn: 0, tn: 0 } },
  ])("confusionAt($threshold) flags scores >= the threshold", ({ threshold, want }) => {
    expect(confusionAt([0.9, 0.8, 0.7, 0.6], [T, F, T, F], threshold)).toEqual(want);
  });
});

describe("cutBetween", () => {
  it.each([
    { below: 0.6, at: 0.7, want: 0.65 },
    { below: 0.3, at: 0.9, want: 0.6 },
    { below: 0.6111, at: 0.6119, want: 0.6115 },
    { below: -0.2, at: 0.1, want: -0.05 },
    { below: undefined, at: 0.5, want: 0.5 },
    { below: 0.5, at: 0.5, want: 0.5 },
  ])("($below, $at] → $want", ({ below, at, want }) => {
    const t = cutBetween(below, at);
    expect(t).toBeCloseTo(want, 12);
    if (below !== undefined && below < at) {
      expect(t).toBeGreaterThan(below);
      expect(t).toBeLessThanOrEqual(at);
    }
  });
});

describe("threshold suggestions", () => {
  const points = operatingPoints([0.9, 0.8, 0.7, 0.6], [T, F, T, F]);
  it.each([
    { target: 0.95, threshold: 0.65, tp: 2, fp: 1 },
    { target: 0.5, threshold: 0.85, tp: 1, fp: 0 },
  ])("review at recall $target: the highest threshold reaching it", ({ target, threshold, tp, fp }) => {
    expect(suggestForRecall(points, target)).toMatchObject({ threshold, tp, fp, lowestFlaggedScore: expect.any(Number) });
  });

  it.each([
    { target: 0.98, threshold: 0.85, recall: 0.5 },
    { target: 0.6, threshold: 0.65, recall: 1 },
  ])("block at precision $target: the highest recall reaching it", ({ target, threshold, recall }) => {
    expect(suggestForPrecision(points, target)).toMatchObject({ threshold, recall });
  });

  it("keeps the higher threshold when a lower one adds no recall", () => {
    // .8 adds a false positive and no positive: same recall, worse precision
    expect(suggestForPrecision(points, 0.5)?.lowestFlaggedScore).toBe(0.7);
    expect(suggestForPrecision(operatingPoints([0.9, 0.8], [T, F]), 0.5)?.threshold).toBe(0.85);
  });

  it("returns null when the target cannot be met or there are no positives", () => {
    expect(suggestForPrecision(operatingPoints([0.1, 0.2, 0.8, 0.9], [T, T, F, F]), 0.98)).toBeNull();
    expect(suggestForRecall(operatingPoints([0.1, 0.2], [F, F]), 0.95)).toBeNull();
    expect(suggestForRecall([], 0.95)).toBeNull();
  });

  it("puts thresholds between the classes of a separable set", () => {
    const pts = operatingPoints([0.95, 0.91, 0.42, 0.3], [T, T, F, F]);
    for (const s of [suggestForRecall(pts, 0.95), suggestForPrecision(pts, 0.98)]) {
      expect(s?.threshold).toBeGreaterThan(0.42);
      expect(s?.threshold).toBeLessThan(0.91);
    }
  });
});

describe("gridThresholds, histogram", () => {
  it("spaces thresholds evenly over the scores", () => {
    expect(gridThresholds([0, 1, 0.5], 5)).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(gridThresholds([0.2, 0.2])).toEqual([0.2]);
    expect(gridThresholds([])).toEqual([]);
  });

  it("counts values into equal bins, the last one closed", () => {
    expect(histogram([0, 0.5, 1, 1.5, -0.1], 0, 1, 2)).toEqual([1, 2]);
    expect(histogram([0.3, 0.3], 0.3, 0.3, 3)).toEqual([2, 0, 0]);
  });
});

describe("evaluatePolicy", () => {
  const policy: Policy = {
    id: "p",
    description: "",
    prompts: ["x"],
    negatives: [],
    scoring: "similarity",
    logitScale: 100,
    thresholds: { review: 0.5, block: 0.8 },
    tiles: false,
  };
  const example = (score: number, policyIds: string[]): ScoredExample => ({ path: `${score}`, sha256: "", policyIds, scores: { p: score } });
  const examples = [example(0.9, ["p"]), example(0.85, ["p", "q"]), example(0.3, []), example(0.2, []), example(0.95, ["q"])];
  const targets = { reviewRecall: 0.95, blockPrecision: 0.98 };

  it("counts images of other policies as negatives in `all` mode", () => {
    const e = evaluatePolicy(policy, examples, "all", targets);
    expect([e.positives, e.negatives, e.benign, e.otherPolicies]).toEqual([2, 3, 2, 1]);
    expect(e.auc).toBeCloseTo(4 / 6, 12); // the q image outscores both positives
    expect(e.suggested.review).toMatchObject({ tp: 2, fp: 1 });
    expect(e.suggested.block).toBeNull();
    expect(e.notes.join(" ")).toMatch(/no threshold reaches precision 0.98/);
    expect(e.current.review).toMatchObject({ threshold: 0.5, tp: 2, fp: 1, fn: 0, tn: 2 });
    expect(e.hardest.negatives[0]).toEqual({ path: "0.95", score: 0.95 });
    expect(e.scores).toEqual({ positive: [0.9, 0.85], benign: [0.3, 0.2], other: [0.95] });
  });

  it("leaves images of other policies out in `benign` mode", () => {
    const e = evaluatePolicy(policy, examples, "benign", targets);
    expect([e.positives, e.negatives, e.otherPolicies]).toEqual([2, 2, 0]);
    expect(e.auc).toBe(1);
    expect(e.suggested.review?.threshold).toBe(e.suggested.block?.threshold);
    expect(e.suggested.block?.threshold).toBeGreaterThan(0.3);
    expect(e.suggested.block?.threshold).toBeLessThan(0.85);
  });

  it("sets review to block when the block threshold already reaches the recall target", () => {
    const set = [example(0.9, ["p"]), example(0.8, ["p"]), example(0.5, ["p"]), example(0.1, [])];
    const e = evaluatePolicy(policy, set, "all", { reviewRecall: 0.6, blockPrecision: 0.98 });
    expect(e.suggested.block?.threshold).toBe(0.3);
    expect(e.suggested.review?.threshold).toBe(0.3);
    expect(e.notes.join(" ")).toMatch(/review suggested equal to block/);
  });

  it("says so when a policy has no positive examples", () => {
    const e = evaluatePolicy(policy, [example(0.3, [])], "all", targets);
    expect(e).toMatchObject({ auc: null, averagePrecision: null, suggested: { review: null, block: null } });
    expect(e.notes.join(" ")).toMatch(/no positive examples/);
  });
});
