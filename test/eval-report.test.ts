import fs from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { EmbeddingStore } from "../src/eval/embedding-store.js";
import { operatingPointAt, operatingPoints, type Suggestion } from "../src/eval/metrics.js";
import { CHART_HEIGHT, CHART_WIDTH, chartPng, chartSvg, escapeXml } from "../src/eval/pr-chart.js";
import type { PolicyEvaluation } from "../src/eval/policy-evaluation.js";
import { mdCell } from "../src/eval/report-markdown.js";
import { applySuggestions } from "../src/eval/suggested-policies.js";
import { parsePolicies } from "../src/policies/index.js";
import { tempDir } from "./support/fixtures.js";
import { EVAL_POLICIES } from "./support/labelled-set.js";

const scores = [0.9, 0.8, 0.3, 0.2];
const labels = [true, true, false, false];
const suggestion = (threshold: number): Suggestion => ({ ...operatingPointAt(scores, labels, threshold), lowestFlaggedScore: 0.8 });

function evaluation(id: string, overrides: Partial<PolicyEvaluation> = {}): PolicyEvaluation {
  return {
    id,
    description: "",
    scoring: "similarity",
    positives: 2,
    negatives: 2,
    benign: 2,
    otherPolicies: 0,
    auc: 1,
    averagePrecision: 1,
    current: { review: operatingPointAt(scores, labels, 0.5), block: operatingPointAt(scores, labels, 0.8) },
    suggested: { review: suggestion(0.55), block: suggestion(0.55) },
    notes: [],
    table: [],
    hardest: { positives: [], negatives: [] },
    curve: operatingPoints(scores, labels),
    scores: { positive: [0.9, 0.8], benign: [0.3, 0.2], other: [] },
    ...overrides,
  };
}

describe("applySuggestions (--write)", () => {
  it("changes the threshold values and nothing else, byte for byte", () => {
    const evaluations = [
      evaluation("red"),
      evaluation("blue", { current: { review: operatingPointAt(scores, labels, 0.5), block: null } }),
      evaluation("yellow", { suggested: { review: null, block: null } }),
    ];
    const { text, changes, skipped } = applySuggestions(EVAL_POLICIES, "p.yaml", evaluations);
    const expected = EVAL_POLICIES.replace("{ review: 0.5, block: 0.8 } # hand-picked", "{ review: 0.55, block: 0.55 } # hand-picked").replace(
      "review: 0.5 # review only",
      "review: 0.55 # review only",
    );
    expect(text).toBe(expected);
    expect(changes).toEqual([
      { id: "red", kind: "review", from: 0.5, to: 0.55 },
      { id: "red", kind: "block", from: 0.8, to: 0.55 },
      { id: "blue", kind: "review", from: 0.5, to: 0.55 },
    ]);
    // a review-only policy is not given a block threshold
    expect(skipped).toEqual([
      { id: "blue", kind: "block", reason: "the policy sets no block threshold" },
      { id: "yellow", kind: "review", reason: expect.stringMatching(/no suggestion/) },
      { id: "yellow", kind: "block", reason: expect.stringMatching(/no suggestion/) },
    ]);
    expect(parsePolicies(text, "p.yaml").policies.find((p) => p.id === "blue")?.thresholds).toEqual({ review: 0.55 });
  });

  it("keeps review when it would end up above a block threshold that was not changed", () => {
    const red = evaluation("red", { suggested: { review: suggestion(0.85), block: null } });
    const { text, skipped } = applySuggestions(EVAL_POLICIES, "p.yaml", [red]);
    expect(text).toBe(EVAL_POLICIES);
    expect(skipped.map((s) => s.reason).join(" ")).toMatch(/above the block threshold 0.8/);
  });
});

describe("charts", () => {
  it("escapes text from the policies file", () => {
    expect(escapeXml(`<script>&"'\u0001`)).toBe("&lt;script&gt;&amp;&quot;&#39;");
    const svg = chartSvg(evaluation("red", { description: '</text><script>alert("x")</script>' }));
    expect(svg).not.toContain("<script>");
    expect(svg).toContain("&lt;/text&gt;&lt;script&gt;");
  });

  it("renders a PNG of the documented size, also without positives", async () => {
    for (const e of [evaluation("red"), evaluation("none", { positives: 0, auc: null, averagePrecision: null, curve: [], scores: { positive: [], benign: [0.1], other: [] } })]) {
      const meta = await sharp(await chartPng(e)).metadata();
      expect([meta.format, meta.width, meta.height]).toEqual(["png", CHART_WIDTH, CHART_HEIGHT]);
    }
  });
});

describe("mdCell", () => {
  it("keeps table cells in one cell", () => {
    expect(mdCell("a|b\nc\\d")).toBe("a\\|b c\\\\d");
  });
});

describe("EmbeddingStore", () => {
  const sha = "a".repeat(64);
  it("round-trips float32 embeddings per model fingerprint, and ignores damaged entries", async () => {
    const dir = await tempDir("clipguard-embstore-");
    const store = new EmbeddingStore(dir, "0123abcd");
    expect(await store.get(sha)).toBeUndefined();
    const embedding = Float32Array.from([0.5, -1.25, 3]);
    await store.set(sha, embedding);
    expect(await store.get(sha, 3)).toEqual(embedding);
    expect(await store.get(sha, 4)).toBeUndefined();
    expect(await new EmbeddingStore(dir, "ffff0000").get(sha)).toBeUndefined();
    await fs.writeFile(path.join(dir, "0123abcd", `${sha}.f32`), Buffer.from([1, 2, 3]));
    expect(await store.get(sha)).toBeUndefined();
  });

  it("refuses keys that could escape the cache folder", () => {
    expect(() => new EmbeddingStore("/tmp", "../x")).toThrow();
    return expect(new EmbeddingStore("/tmp", "abc").get("../../etc/passwd")).rejects.toThrow();
  });
});
