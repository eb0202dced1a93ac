/**
 * `--compare`: two policy files judged on the same image embeddings, so that prompt changes are
 * measured rather than guessed. Per policy id: the AUC and AP of each file and their difference;
 * per prompt: the AUC the prompt reaches on its own (scored as its policy scores, with the
 * policy's negatives for contrastive), so that an added prompt that drags the ensemble down shows.
 * No I/O.
 */
import type { CompiledPolicy, CompiledPolicySet } from "../policies/index.js";
import { contrastiveScore, l2normalize, similarityScore } from "../policies/index.js";
import type { EmbeddedImage } from "./image-embeddings.js";
import { rocAuc } from "./metrics.js";
import type { NegativesMode, PolicyEvaluation } from "./policy-evaluation.js";
import { roleFor } from "./policy-evaluation.js";

/** Which file a prompt is in. */
export type PromptPresence = "both" | "base" | "other";

export interface PromptAuc {
  prompt: string;
  in: PromptPresence;
  /** AUC of this prompt alone in the base file (`null` when not there, or undefined). */
  baseAuc: number | null;
  /** AUC of this prompt alone in the other file. */
  otherAuc: number | null;
}

export interface PolicyComparison {
  id: string;
  in: PromptPresence;
  base: { auc: number | null; averagePrecision: number | null } | null;
  other: { auc: number | null; averagePrecision: number | null } | null;
  /** other − base; `null` when either is missing. */
  aucDelta: number | null;
  averagePrecisionDelta: number | null;
  prompts: PromptAuc[];
}

export interface Comparison {
  /** The file compared against the main policies file. */
  otherFile: string;
  otherVersion: string;
  policies: PolicyComparison[];
}

const delta = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a === null || a === undefined || b === null || b === undefined ? null : b - a;

/** AUC of each prompt of `policy` scored alone, by prompt text. */
function promptAucs(policy: CompiledPolicy, embedded: readonly EmbeddedImage[], mode: NegativesMode): Map<string, number | null> {
  const labels: boolean[] = [];
  const images: Float32Array[] = [];
  for (const e of embedded) {
    const role = roleFor(e.image, policy.id, mode);
    if (role === undefined) continue;
    labels.push(role === "positive");
    images.push(l2normalize(e.embedding));
  }
  const out = new Map<string, number | null>();
  policy.prompts.forEach((prompt, k) => {
    const embedding = policy.promptEmbeddings[k];
    if (embedding === undefined) return;
    const scores = images.map((image) =>
      policy.scoring === "contrastive"
        ? contrastiveScore(image, embedding, policy.negativeEmbeddings, policy.logitScale)
        : similarityScore(image, embedding),
    );
    out.set(prompt, rocAuc(scores, labels));
  });
  return out;
}

/**
 * Compares the evaluations of two compiled files over the same embeddings.
 * Policies are matched by id; order follows the base file, then ids only in the other.
 */
export function comparePolicySets(
  base: { compiled: CompiledPolicySet; evaluations: readonly PolicyEvaluation[] },
  other: { compiled: CompiledPolicySet; evaluations: readonly PolicyEvaluation[]; file: string },
  embedded: readonly EmbeddedImage[],
  mode: NegativesMode,
): Comparison {
  const ids = [...new Set([...base.compiled.policies.map((p) => p.id), ...other.compiled.policies.map((p) => p.id)])];
  const policies = ids.map((id): PolicyComparison => {
    const basePolicy = base.compiled.policies.find((p) => p.id === id);
    const otherPolicy = other.compiled.policies.find((p) => p.id === id);
    const baseEval = base.evaluations.find((e) => e.id === id);
    const otherEval = other.evaluations.find((e) => e.id === id);
    const baseAucs = basePolicy ? promptAucs(basePolicy, embedded, mode) : new Map<string, number | null>();
    const otherAucs = otherPolicy ? promptAucs(otherPolicy, embedded, mode) : new Map<string, number | null>();
    const prompts = [...new Set([...baseAucs.keys(), ...otherAucs.keys()])].map(
      (prompt): PromptAuc => ({
        prompt,
        in: baseAucs.has(prompt) && otherAucs.has(prompt) ? "both" : baseAucs.has(prompt) ? "base" : "other",
        baseAuc: baseAucs.get(prompt) ?? null,
        otherAuc: otherAucs.get(prompt) ?? null,
      }),
    );
    return {
      id,
      in: basePolicy && otherPolicy ? "both" : basePolicy ? "base" : "other",
      base: baseEval ? { auc: baseEval.auc, averagePrecision: baseEval.averagePrecision } : null,
      other: otherEval ? { auc: otherEval.auc, averagePrecision: otherEval.averagePrecision } : null,
      aucDelta: delta(baseEval?.auc, otherEval?.auc),
      averagePrecisionDelta: delta(baseEval?.averagePrecision, otherEval?.averagePrecision),
      prompts,
    };
  });
  return { otherFile: other.file, otherVersion: other.compiled.version, policies };
}
