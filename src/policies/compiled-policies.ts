/**
 * PolicySet + text tower → CompiledPolicySet: every prompt and negative embedded once (through the
 * text-embedding cache when there is one), category embeddings ensembled, and a `judge` that turns
 * an image embedding into per-policy scores and one decision.
 */
import type { TextEmbedder } from "../clip/types.js";
import { ClipguardError } from "../shared/errors.js";
import type { Policy, PolicySet } from "./policy-set.js";
import {
  closestIndex,
  contrastiveScore,
  ensemble,
  l2normalize,
  mostSevere,
  similarityScore,
  decide,
  type Decision,
} from "./scoring.js";
import type { TextEmbeddingCache } from "./text-embedding-cache.js";

export interface CompileOptions {
  /**
   * Texts per `embedTexts` call.
   * @default 32
   */
  batchSize?: number;
}

/** A policy with its embeddings, all L2-normalized. */
export interface CompiledPolicy extends Policy {
  /** The ensembled category embedding (normalized mean of the prompt embeddings). */
  readonly category: Float32Array;
  /** One per prompt, in the order of `prompts`. */
  readonly promptEmbeddings: readonly Float32Array[];
  /** One per negative, in the order of `negatives`. */
  readonly negativeEmbeddings: readonly Float32Array[];
}

export interface PolicyJudgement {
  id: string;
  /** Full precision: a cosine for similarity scoring, a probability for contrastive. */
  score: number;
  decision: Decision;
  /** The policy prompt closest to the image, to show reviewers why it matched. */
  prompt: string;
}

export interface Judgement {
  /** The most severe decision over the judged policies; `allow` when none were judged. */
  decision: Decision;
  /** In file order. */
  policies: PolicyJudgement[];
}

/** What compiling cost: `cached + embedded = texts`. */
export interface CompileStats {
  /** Unique prompt and negative texts in the set. */
  texts: number;
  cached: number;
  embedded: number;
  /** `embedTexts` calls. */
  batches: number;
}

export interface CompiledPolicySet {
  /** The policy set's version (`PolicySet.version`). */
  readonly version: string;
  /** The text embedder's model fingerprint. */
  readonly fingerprint: string;
  /** Embedding length; image embeddings must have the same. */
  readonly dimension: number;
  readonly policies: readonly CompiledPolicy[];
  readonly stats: CompileStats;
  /**
   * Score an image embedding against the policies (all of them, or those named in `onlyIds`;
   * an empty `onlyIds` judges none and allows).
   * @throws ClipguardError `CLIPGUARD_E_POLICY_UNKNOWN` naming every id in `onlyIds` that is not loaded
   * @throws ClipguardError `CLIPGUARD_E_MODEL` when the embedding's dimension differs from the texts'
   */
  judge(imageEmbedding: Float32Array, onlyIds?: readonly string[]): Judgement;
}

/** Unique texts in first-seen order. */
function uniqueTexts(policies: readonly Policy[]): string[] {
  const texts = new Set<string>();
  for (const policy of policies) for (const text of [...policy.prompts, ...policy.negatives]) texts.add(text);
  return [...texts];
}

async function embedAll(
  texts: readonly string[],
  embedder: TextEmbedder,
  cache: TextEmbeddingCache | undefined,
  batchSize: number,
): Promise<{ embeddings: Map<string, Float32Array>; stats: CompileStats }> {
  const embeddings = new Map<string, Float32Array>();
  const cached = cache ? await cache.getMany(embedder.fingerprint, texts) : [];
  const misses: string[] = [];
  texts.forEach((text, index) => {
    const hit = cached[index];
    if (hit === undefined) misses.push(text);
    else embeddings.set(text, hit);
  });

  let batches = 0;
  for (let start = 0; start < misses.length; start += batchSize) {
    const batch = misses.slice(start, start + batchSize);
    const out = await embedder.embedTexts(batch);
    batches++;
    if (out.length !== batch.length) {
      throw new ClipguardError(
        "CLIPGUARD_E_INTERNAL",
        `the text embedder returned ${out.length} embeddings for ${batch.length} texts`,
      );
    }
    const entries = batch.map((text, i): [string, Float32Array] => [text, out[i] as Float32Array]);
    for (const [text, embedding] of entries) embeddings.set(text, embedding);
    // Stored per batch, so that a failure part-way keeps the work already done.
    if (cache) await cache.setMany(embedder.fingerprint, entries);
  }
  return {
    embeddings,
    stats: { texts: texts.length, cached: texts.length - misses.length, embedded: misses.length, batches },
  };
}

/** Normalized embeddings of one length; a mismatch means a stale cache or a broken embedder. */
function normalizeAll(embeddings: Map<string, Float32Array>): { units: Map<string, Float32Array>; dimension: number } {
  const units = new Map<string, Float32Array>();
  let dimension = 0;
  for (const [text, embedding] of embeddings) {
    if (dimension === 0) dimension = embedding.length;
    if (embedding.length !== dimension || dimension === 0) {
      throw new ClipguardError(
        "CLIPGUARD_E_INTERNAL",
        `the embedding of "${text.slice(0, 60)}" has ${embedding.length} dimensions, expected ${dimension}`,
      );
    }
    units.set(text, l2normalize(embedding));
  }
  return { units, dimension };
}

function compilePolicy(policy: Policy, units: ReadonlyMap<string, Float32Array>): CompiledPolicy {
  const lookup = (text: string): Float32Array => {
    const unit = units.get(text);
    if (unit === undefined) throw new ClipguardError("CLIPGUARD_E_INTERNAL", `no embedding for "${text}"`);
    return unit;
  };
  const promptEmbeddings = policy.prompts.map(lookup);
  return Object.freeze({
    ...policy,
    category: ensemble(promptEmbeddings),
    promptEmbeddings,
    negativeEmbeddings: policy.negatives.map(lookup),
  });
}

function scorePolicy(policy: CompiledPolicy, image: Float32Array): number {
  switch (policy.scoring) {
    case "similarity":
      return similarityScore(image, policy.category);
    case "contrastive":
      return contrastiveScore(image, policy.category, policy.negativeEmbeddings, policy.logitScale);
  }
}

function selectPolicies(policies: readonly CompiledPolicy[], onlyIds: readonly string[] | undefined): CompiledPolicy[] {
  if (onlyIds === undefined) return [...policies];
  const known = new Set(policies.map((p) => p.id));
  const unknown = [...new Set(onlyIds.filter((id) => !known.has(id)))];
  if (unknown.length > 0) {
    const loaded = [...known];
    const shown = loaded.length > 20 ? `${loaded.slice(0, 20).join(", ")}, … (${loaded.length} in all)` : loaded.join(", ");
    throw new ClipguardError(
      "CLIPGUARD_E_POLICY_UNKNOWN",
      `unknown policy id${unknown.length > 1 ? "s" : ""} ${unknown.map((id) => JSON.stringify(id)).join(", ")}; loaded policies: ${shown}`,
    );
  }
  const wanted = new Set(onlyIds);
  return policies.filter((p) => wanted.has(p.id));
}

/**
 * Embed every prompt and negative of `set` (cache first, then `embedder` for the misses, in
 * batches, storing what it embeds) and build the category embeddings.
 */
export async function compilePolicies(
  set: PolicySet,
  embedder: TextEmbedder,
  cache?: TextEmbeddingCache,
  options: CompileOptions = {},
): Promise<CompiledPolicySet> {
  const batchSize = options.batchSize ?? 32;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new ClipguardError("CLIPGUARD_E_CONFIG", `batchSize must be a positive integer, got ${batchSize}`);
  }
  const { embeddings, stats } = await embedAll(uniqueTexts(set.policies), embedder, cache, batchSize);
  const { units, dimension } = normalizeAll(embeddings);
  const policies = Object.freeze(set.policies.map((policy) => compilePolicy(policy, units)));

  const judge = (imageEmbedding: Float32Array, onlyIds?: readonly string[]): Judgement => {
    const selected = selectPolicies(policies, onlyIds);
    if (selected.length === 0) return { decision: "allow", policies: [] };
    if (imageEmbedding.length !== dimension) {
      throw new ClipguardError(
        "CLIPGUARD_E_MODEL",
        `the image embedding has ${imageEmbedding.length} dimensions but the policies were compiled with ${dimension}; ` +
          `image and text embeddings must come from the same model`,
      );
    }
    const image = l2normalize(imageEmbedding);
    const results = selected.map((policy): PolicyJudgement => {
      const score = scorePolicy(policy, image);
      const closest = closestIndex(image, policy.promptEmbeddings);
      return { id: policy.id, score, decision: decide(score, policy.thresholds), prompt: policy.prompts[closest] ?? "" };
    });
    return { decision: mostSevere(results.map((r) => r.decision)), policies: results };
  };

  return Object.freeze({
    version: set.version,
    fingerprint: embedder.fingerprint,
    dimension,
    policies,
    stats: Object.freeze(stats),
    judge,
  });
}
