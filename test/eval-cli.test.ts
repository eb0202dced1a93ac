/**
 * `clipguard eval` end to end with the demo model (dist/ build) on a generated labelled set whose
 * right answers are known: red and blue images are perfectly separable by their policies.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";
import { beforeAll, describe, expect, it } from "vitest";
import type { EvalReport, PolicyReport } from "../src/eval/eval-report.js";
import { CHART_HEIGHT, CHART_WIDTH } from "../src/eval/pr-chart.js";
import { parsePolicies } from "../src/policies/index.js";
import { tempDir } from "./support/fixtures.js";
import { makeLabelledSet, type GeneratedSet } from "./support/labelled-set.js";
import { CLI } from "./support/worker-process.js";

function clipguard(args: string[], env: Record<string, string> = {}) {
  const result = spawnSync(process.execPath, [CLI, "eval", ...args], {
    encoding: "utf8",
    env: { ...process.env, CLIPGUARD_MODEL_DIR: "", CLIPGUARD_POLICIES: "", CLIPGUARD_EVAL_CACHE: "", ...env },
    timeout: 120_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

async function readReport(out: string): Promise<EvalReport> {
  return JSON.parse(await fs.readFile(path.join(out, "report.json"), "utf8")) as EvalReport;
}

const result = (report: EvalReport, id: string): PolicyReport => {
  const r = report.results.find((x) => x.id === id);
  if (r === undefined) throw new Error(`no result for ${id}`);
  return r;
};

/** Scores of policy `id` over the images labelled `label` (a policy id, or "" for benign). */
function scoresOf(report: EvalReport, id: string, positive: boolean): number[] {
  return report.examples.filter((e) => e.policyIds.includes(id) === positive).map((e) => e.scores[id] as number);
}

describe("clipguard eval", () => {
  let dir: string;
  let set: GeneratedSet;
  let out: string;
  let first: ReturnType<typeof clipguard>;

  beforeAll(async () => {
    dir = await tempDir("clipguard-eval-");
    set = await makeLabelledSet(dir);
    out = path.join(dir, "out");
    first = clipguard(["--policies", set.policies, "--labels", set.root, "--out", out, "--write"]);
  });

  it("evaluates a separable set: AUC 1, thresholds between the classes, exit 0", async () => {
    expect(first.stderr).not.toMatch(/unexpected/);
    expect(first.status).toBe(0);
    const report = await readReport(out);
    expect(report.model.name).toBe("clipguard/demo-colour-clip");
    expect(report.negatives).toBe("all");
    expect(report.targets).toEqual({ reviewRecall: 0.95, blockPrecision: 0.98 });
    expect(report.labels).toMatchObject({ format: "folders", images: 41, benign: 21, byPolicy: { red: 10, blue: 10, yellow: 0 } });
    for (const id of ["red", "blue"]) {
      const r = result(report, id);
      expect([r.positives, r.negatives, r.benign, r.otherPolicies]).toEqual([10, 30, 20, 10]);
      expect(r.auc).toBe(1);
      expect(r.averagePrecision).toBe(1);
      const maxNegative = Math.max(...scoresOf(report, id, false));
      const minPositive = Math.min(...scoresOf(report, id, true));
      for (const s of [r.suggested.review, r.suggested.block]) {
        expect(s).toMatchObject({ tp: 10, fp: 0, fn: 0, tn: 30, precision: 1, recall: 1 });
        expect(s!.threshold).toBeGreaterThan(maxNegative);
        expect(s!.threshold).toBeLessThan(minPositive);
      }
    }
    // the hand-picked blue review threshold lets gray images through: the report shows it
    expect(result(report, "blue").current.review!.fp).toBeGreaterThan(0);
    expect(result(report, "yellow")).toMatchObject({ auc: null, suggested: { review: null, block: null } });
    expect(first.stdout).toMatch(/^red: AUC 1\.0000 AP 1\.0000/m);
  });

  it("lists an undecodable image in the report and on stderr without failing", async () => {
    const report = await readReport(out);
    expect(report.images).toEqual({ total: 41, embedded: 40, fromCache: 0, failed: 1, visionTowerRuns: 5 });
    expect(report.failures).toEqual([
      { path: path.join(set.root, set.corrupt), origin: "benign/", code: "CLIPGUARD_E_IMAGE_DECODE", message: expect.any(String) },
    ]);
    expect(first.stderr).toContain(`skipped ${path.join(set.root, set.corrupt)}`);
    expect(first.stderr).toContain("[CLIPGUARD_E_IMAGE_DECODE]");
    expect(first.stderr).toMatch(/embedded 41\/41 images/); // plain progress lines off a terminal
    expect(report.examples).toHaveLength(40);
  });

  it("writes report.md and one decodable PNG per policy of the documented size", async () => {
    const md = await fs.readFile(path.join(out, "report.md"), "utf8");
    expect(md).toMatch(/^# clipguard eval report/);
    expect(md).toContain("| `red` | 10 | 30 | 1.0000 | 1.0000 |");
    expect(md).toContain("![red](red.png)");
    expect(md).toContain("CLIPGUARD_E_IMAGE_DECODE");
    for (const id of ["red", "blue", "yellow"]) {
      const meta = await sharp(path.join(out, `${id}.png`)).metadata();
      expect([meta.format, meta.width, meta.height]).toEqual(["png", CHART_WIDTH, CHART_HEIGHT]);
    }
  });

  it("--write keeps comments and layout and sets the suggested thresholds", async () => {
    const original = await fs.readFile(set.policies, "utf8");
    const written = await fs.readFile(path.join(out, "policies.suggested.yaml"), "utf8");
    const report = await readReport(out);
    const red = result(report, "red").suggested;
    const blue = result(report, "blue").suggested;
    expect(written).toContain("# Colour policies for the eval tests (demo model).");
    expect(written).toContain(`thresholds: { review: ${red.review!.threshold}, block: ${red.block!.threshold} } # hand-picked, to be calibrated`);
    expect(written).toContain(`      review: ${blue.review!.threshold} # review only: never blocks`);
    expect(written.split("\n")).toHaveLength(original.split("\n").length);
    const parsed = parsePolicies(written, "suggested.yaml");
    expect(parsed.policies.map((p) => [p.id, p.thresholds])).toEqual([
      ["red", { review: red.review!.threshold, block: red.block!.threshold }],
      ["blue", { review: blue.review!.threshold }],
      ["yellow", { review: 0.6, block: 0.9 }],
    ]);
    expect(report.suggestedPolicies?.skipped).toContainEqual({ id: "blue", kind: "block", reason: "the policy sets no block threshold" });
  });

  it("re-runs from the embedding cache without running the vision tower", async () => {
    const again = clipguard(["--policies", set.policies, "--labels", set.root, "--out", out]);
    expect(again.status).toBe(0);
    const report = await readReport(out);
    expect(report.images).toEqual({ total: 41, embedded: 0, fromCache: 40, failed: 1, visionTowerRuns: 0 });
    expect(report.cache.dir).toBe(path.join(out, "embeddings"));
    expect(result(report, "red").auc).toBe(1);
  });

  it.each(["csv", "jsonl"] as const)("reads %s labels (and a cache chosen with CLIPGUARD_EVAL_CACHE)", async (format) => {
    const cache = path.join(dir, "shared-cache");
    const o = path.join(dir, `out-${format}`);
    const run = clipguard(["--policies", set.policies, "--labels", set[format], "--out", o], { CLIPGUARD_EVAL_CACHE: cache });
    expect(run.status).toBe(0);
    const report = await readReport(o);
    expect(report.labels).toMatchObject({ format, images: 41, benign: 21 });
    expect(report.cache.dir).toBe(cache);
    expect(report.images.embedded + report.images.fromCache).toBe(40);
    expect(report.failures.map((f) => f.code)).toEqual(["CLIPGUARD_E_IMAGE_DECODE"]);
    expect(result(report, "red")).toMatchObject({ positives: 10, negatives: 30, auc: 1 });
  });

  it("--negatives benign leaves other policies' images out; --cache and targets are honoured", async () => {
    const o = path.join(dir, "out-benign");
    const run = clipguard(["--policies", set.policies, "--labels", set.root, "--out", o, "--cache", path.join(out, "embeddings"), "--negatives", "benign", "--target-recall", "0.5", "--target-precision", "0.9"]);
    expect(run.status).toBe(0);
    const report = await readReport(o);
    expect(report.images.embedded).toBe(0);
    expect(report.targets).toEqual({ reviewRecall: 0.5, blockPrecision: 0.9 });
    expect(result(report, "red")).toMatchObject({ positives: 10, negatives: 20, otherPolicies: 0 });
  });

  it("--compare shows which prompts gain or lose on the same embeddings", async () => {
    const o = path.join(dir, "out-compare");
    const run = clipguard(["--policies", set.policies, "--labels", set.root, "--out", o, "--cache", path.join(out, "embeddings"), "--compare", set.otherPolicies]);
    expect(run.status).toBe(0);
    const report = await readReport(o);
    expect(report.images.embedded).toBe(0);
    const red = report.compare!.policies.find((p) => p.id === "red")!;
    expect(red.base).toEqual({ auc: 1, averagePrecision: 1 });
    expect(red.aucDelta).toBeLessThan(0);
    expect(red.prompts).toEqual(
      expect.arrayContaining([
        { prompt: "a mostly red image", in: "both", baseAuc: 1, otherAuc: 1 },
        { prompt: "a crimson picture", in: "base", baseAuc: 1, otherAuc: null },
        expect.objectContaining({ prompt: "a dark picture", in: "other", baseAuc: null }),
      ]),
    );
    expect(red.prompts.find((p) => p.prompt === "a dark picture")!.otherAuc).toBeLessThan(0.5);
    expect(report.compare!.policies.find((p) => p.id === "blue")!.aucDelta).toBe(0);
    expect(run.stdout).toMatch(/^compare red: ΔAUC -0\.\d{4}/m);
    const md = await fs.readFile(path.join(o, "report.md"), "utf8");
    expect(md).toContain("| `red` | a dark picture | other |");
  });

  it("refuses label folders that are not policy ids, naming them, exit 2", async () => {
    const labels = path.join(dir, "bad-labels");
    await fs.cp(set.root, labels, { recursive: true });
    await fs.rename(path.join(labels, "blue"), path.join(labels, "purple"));
    const run = clipguard(["--policies", set.policies, "--labels", labels, "--out", path.join(dir, "out-bad")]);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/"purple" \(purple\/\)/);
    expect(run.stderr).toContain("[CLIPGUARD_E_LABELS]");
    expect(run.stdout).toBe("");
  });

  it.each([
    { name: "a missing labels folder", args: (s: GeneratedSet) => ["--policies", s.policies, "--labels", path.join(dir, "missing")], code: "CLIPGUARD_E_LABELS" },
    { name: "a bad target", args: (s: GeneratedSet) => ["--policies", s.policies, "--labels", s.root, "--target-recall", "1.5"], code: "CLIPGUARD_E_CONFIG" },
    { name: "a missing policies file", args: (s: GeneratedSet) => ["--policies", path.join(dir, "none.yaml"), "--labels", s.root], code: "CLIPGUARD_E_POLICIES" },
  ])("exits 2 on $name", ({ args, code }) => {
    const run = clipguard([...args(set), "--out", path.join(dir, "out-err")]);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain(`[${code}]`);
  });

  it("exits 2 without --labels (usage)", () => {
    const run = clipguard(["--policies", set.policies]);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/--labels/);
  });
});
