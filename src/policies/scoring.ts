/**
 * The scoring math: plain functions over vectors and numbers, no I/O.
 *
 * Embeddings are Float32Array; sums are accumulated in float64 so results do not depend on the
 * order of a long float32 accumulation more than they must.
 */
import { ClipguardError } from "../shared/errors.js";
import type { PolicyThresholds } from "./policy-set.js";

/** What happens to an image, from least to most severe. */
export type Decision = "allow" | "review" | "block";

const SEVERITY: Record<Decision, number> = { allow: 0, review: 1, block: 2 };

/** Dot product. Vectors of different lengths come from different models: that is a bug upstream. */
export function dot(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) {
    throw new ClipguardError(
      "CLIPGUARD_E_INTERNAL",
      `cannot compare embeddings of different dimensions (${a.length} and ${b.length})`,
    );
  }
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += (a[i] ?? 0) * (b[i] ?? 0);
  return sum;
}

/**
 * A new vector with the direction of `v` and length 1.
 * @throws ClipguardError `CLIPGUARD_E_INTERNAL` for a zero (or non-finite) vector, which has no
 *   direction: a model that produces one is broken, and a silent zero score would hide it.
 */
export function l2normalize(v: Float32Array): Float32Array {
  const norm = Math.sqrt(dot(v, v));
  if (!(norm > 0) || !Number.isFinite(norm)) {
    throw new ClipguardError("CLIPGUARD_E_INTERNAL", `cannot normalize an embedding with norm ${norm}`);
  }
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = (v[i] ?? 0) / norm;
  return out;
}

/**
 * CLIP prompt ensembling: the normalized mean of the normalized embeddings of several prompts
 * for one category.
 */
export function ensemble(embeddings: readonly Float32Array[]): Float32Array {
  const [first] = embeddings;
  if (first === undefined) throw new ClipguardError("CLIPGUARD_E_INTERNAL", "cannot ensemble zero embeddings");
  const sum = new Float64Array(first.length);
  for (const embedding of embeddings) {
    const unit = l2normalize(embedding);
    if (unit.length !== sum.length) {
      throw new ClipguardError(
        "CLIPGUARD_E_INTERNAL",
        `cannot ensemble embeddings of different dimensions (${sum.length} and ${unit.length})`,
      );
    }
    for (let i = 0; i < unit.length; i++) sum[i] = (sum[i] ?? 0) + (unit[i] ?? 0);
  }
  // Dividing by the count would not change the direction; normalizing does both.
  return l2normalize(Float32Array.from(sum));
}

/** Softmax, shifted by the maximum so that large logits (scale 100 × cosine) cannot overflow. */
export function softmax(logits: readonly number[]): number[] {
  if (logits.length === 0) return [];
  const max = Math.max(...logits);
  const exps = logits.map((x) => Math.exp(x - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / total);
}

/** `similarity` scoring: the cosine between two unit vectors, in [-1, 1]. */
export function similarityScore(image: Float32Array, category: Float32Array): number {
  return dot(image, category);
}

/**
 * `contrastive` scoring: the probability that the image is the category rather than any of the
 * negatives, softmax(logitScale × [cos(image, category), cos(image, negative₁), …])[0], in [0, 1].
 */
export function contrastiveScore(
  image: Float32Array,
  category: Float32Array,
  negatives: readonly Float32Array[],
  logitScale: number,
): number {
  const logits = [category, ...negatives].map((e) => logitScale * dot(image, e));
  return softmax(logits)[0] ?? 0;
}

/** `block` at or above `block`, else `review` at or above `review`, else `allow`. */
export function decide(score: number, thresholds: PolicyThresholds): Decision {
  if (thresholds.block !== undefined && score >= thresholds.block) return "block";
  if (thresholds.review !== undefined && score >= thresholds.review) return "review";
  return "allow";
}

/** The most severe decision (block > review > allow); `allow` when there are none. */
export function mostSevere(decisions: Iterable<Decision>): Decision {
  let worst: Decision = "allow";
  for (const decision of decisions) if (SEVERITY[decision] > SEVERITY[worst]) worst = decision;
  return worst;
}

/** Index of the embedding with the highest dot product with `target` (first on ties); -1 for none. */
export function closestIndex(target: Float32Array, candidates: readonly Float32Array[]): number {
  let best = -1;
  let bestScore = -Infinity;
  candidates.forEach((candidate, index) => {
    const score = dot(target, candidate);
    if (score > bestScore) {
      best = index;
      bestScore = score;
    }
  });
  return best;
}
