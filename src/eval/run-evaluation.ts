/**
 * `clipguard eval` end to end: policies and labels checked first (cheap, fail fast), then the
 * model, the prompts, the images (through the on-disk embedding cache), the metrics, and the
 * report folder: `report.json`, `report.md`, one `<policy id>.png` per policy and, with `write`,
 * `policies.suggested.yaml`.
 *
 * Errors: `CLIPGUARD_E_POLICIES`, `CLIPGUARD_E_LABELS`, `CLIPGUARD_E_MODEL`, `CLIPGUARD_E_CONFIG`
 * (the output or cache folder cannot be written) are thrown; images that cannot be read or decoded
 * are not, they are listed in the report.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { ClipModel } from "../clip/clip-model.js";
import type { DecodeLimits } from "../clip/image-decode.js";
import { compilePolicies, loadPolicyFile, MemoryTextEmbeddingCache } from "../policies/index.js";
import { ClipguardError } from "../shared/errors.js";
import { EmbeddingStore } from "./embedding-store.js";
import { chartFileName, policyReport, reportExamples, REPORT_FORMAT, roundComparison, type EvalReport } from "./eval-report.js";
import { embedImages, type FailedImage } from "./image-embeddings.js";
import { checkLabelIds, loadLabelledSet } from "./labelled-set.js";
import { chartPng } from "./pr-chart.js";
import { evaluatePolicies, scoreExamples, type NegativesMode, type Targets } from "./policy-evaluation.js";
import { comparePolicySets } from "./prompt-comparison.js";
import { reportMarkdown } from "./report-markdown.js";
import { applySuggestions } from "./suggested-policies.js";

export interface EvalOptions {
  modelDir: string;
  variant: string;
  intraOpThreads: number;
  policiesFile: string;
  /** A labels folder, CSV or JSONL file (see `labelled-set.ts`). */
  labels: string;
  /** Where the report goes; created when missing. */
  outDir: string;
  /** Root of the image-embedding cache. @default `<outDir>/embeddings` */
  cacheDir?: string;
  negatives: NegativesMode;
  targets: Targets;
  /** A second policies file to compare against the first. */
  compareFile?: string;
  /** Write `<outDir>/policies.suggested.yaml`. */
  write: boolean;
  limits: DecodeLimits;
  onProgress?: (done: number, total: number) => void;
  onFailure?: (failure: FailedImage) => void;
}

export interface EvalResult {
  report: EvalReport;
  /** Files written, report.json first. */
  files: string[];
}

export const SUGGESTED_POLICIES_FILE = "policies.suggested.yaml";

async function writeOut(file: string, data: string | Buffer): Promise<void> {
  try {
    await fs.writeFile(file, data);
  } catch (err) {
    throw new ClipguardError("CLIPGUARD_E_CONFIG", `cannot write ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

export async function runEvaluation(options: EvalOptions): Promise<EvalResult> {
  const policySet = await loadPolicyFile(options.policiesFile);
  const otherSet = options.compareFile === undefined ? undefined : await loadPolicyFile(options.compareFile);
  const labelled = await loadLabelledSet(options.labels);
  checkLabelIds(
    labelled,
    policySet.policies.map((p) => p.id),
    options.policiesFile,
  );

  const model = await ClipModel.load(options.modelDir, { variant: options.variant, intraOpThreads: options.intraOpThreads });
  try {
    // one text cache: prompts shared by the two files of --compare are embedded once
    const textCache = new MemoryTextEmbeddingCache();
    const compiled = await compilePolicies(policySet, model, textCache);
    const otherCompiled = otherSet === undefined ? undefined : await compilePolicies(otherSet, model, textCache);

    const cacheDir = options.cacheDir ?? path.join(options.outDir, "embeddings");
    const store = new EmbeddingStore(cacheDir, model.info.fingerprint);
    const { embedded, failures, counts } = await embedImages(labelled.images, model, store, {
      limits: options.limits,
      dimension: compiled.dimension,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.onFailure ? { onFailure: options.onFailure } : {}),
    });

    const examples = scoreExamples(compiled, embedded);
    const evaluations = evaluatePolicies(compiled, examples, options.negatives, options.targets);

    try {
      await fs.mkdir(options.outDir, { recursive: true });
    } catch (err) {
      throw new ClipguardError("CLIPGUARD_E_CONFIG", `cannot create the output folder ${options.outDir}: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      });
    }
    const files: string[] = [];
    const write = async (name: string, data: string | Buffer) => {
      const file = path.join(options.outDir, name);
      await writeOut(file, data);
      files.push(file);
    };

    const byPolicy: Record<string, number> = Object.fromEntries(policySet.policies.map((p) => [p.id, 0]));
    for (const image of labelled.images) for (const id of image.policyIds) byPolicy[id] = (byPolicy[id] ?? 0) + 1;
    const report: EvalReport = {
      format: REPORT_FORMAT,
      createdAt: new Date().toISOString(),
      model: model.info,
      policies: { file: options.policiesFile, version: policySet.version },
      labels: {
        source: labelled.source,
        format: labelled.format,
        images: labelled.images.length,
        benign: labelled.images.filter((i) => i.policyIds.length === 0).length,
        byPolicy,
      },
      negatives: options.negatives,
      targets: options.targets,
      images: counts,
      cache: { dir: cacheDir },
      failures,
      results: evaluations.map(policyReport),
      examples: reportExamples(examples),
    };

    if (options.write) {
      const text = await fs.readFile(options.policiesFile, "utf8");
      const suggested = applySuggestions(text, options.policiesFile, evaluations);
      await write(SUGGESTED_POLICIES_FILE, suggested.text);
      report.suggestedPolicies = {
        file: path.join(options.outDir, SUGGESTED_POLICIES_FILE),
        changes: suggested.changes,
        skipped: suggested.skipped,
      };
    }
    if (otherCompiled !== undefined && options.compareFile !== undefined) {
      const otherEvaluations = evaluatePolicies(otherCompiled, scoreExamples(otherCompiled, embedded), options.negatives, options.targets);
      const comparison = comparePolicySets(
        { compiled, evaluations },
        { compiled: otherCompiled, evaluations: otherEvaluations, file: options.compareFile },
        embedded,
        options.negatives,
      );
      report.compare = roundComparison(comparison);
    }

    for (const evaluation of evaluations) await write(chartFileName(evaluation.id), await chartPng(evaluation));
    await write("report.md", reportMarkdown(report));
    await write("report.json", JSON.stringify(report, null, 2) + "\n");
    // report.json first in the list: it is the one a caller reads
    files.unshift(files.pop() as string);
    return { report, files };
  } finally {
    await model.release();
  }
}
