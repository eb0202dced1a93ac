/**
 * Judging an image from several embeddings (sampled frames, tiles): per policy, the best crop of
 * each frame (its tiles count only for `tiles: true` policies), then the frames combined by `max`
 * or `any-k`. Pure functions over the compiled policies; no I/O.
 */
import { ClipguardError } from "../shared/errors.js";
import type { CropItem, RegionBox } from "../clip/crop-plan.js";
import type { CompiledPolicySet, PolicyJudgement } from "./compiled-policies.js";
import type { Verdict } from "../shared/verdict.js";
import { decide, mostSevere, type Decision } from "./scoring.js";

export const FRAME_COMBINE_MODES = ["max", "any-k"] as const;

/** How the frames of an animation are combined per policy. */
export interface FrameCombine {
  /**
   * `max`: the best frame decides. `any-k`: a threshold counts as reached when `k` frames reach
   * it, i.e. the score is the k-th best frame's (with fewer frames than `k`, the worst frame's).
   * @default "max" (CLIPGUARD_FRAMES_COMBINE)
   */
  mode: (typeof FRAME_COMBINE_MODES)[number];
  /** @default 2 (CLIPGUARD_FRAMES_K) */
  k: number;
}

export const DEFAULT_FRAME_COMBINE: Readonly<FrameCombine> = Object.freeze({ mode: "max", k: 2 });

export interface CombinedPolicyJudgement extends PolicyJudgement {
  /** The frame whose score decided. */
  frame: number;
  /** The tile whose score decided, when a tile did. */
  region?: RegionBox;
}

export interface ImageJudgement {
  decision: Decision;
  /** Frames scored. */
  frames: number;
  policies: CombinedPolicyJudgement[];
}

interface Candidate {
  item: number;
  score: number;
}

/** The deciding candidate among the per-frame bests, in frame order. */
function combineFrames(frames: readonly Candidate[], combine: FrameCombine): Candidate | undefined {
  if (combine.mode === "max") return frames.reduce<Candidate | undefined>((best, c) => (best === undefined || c.score > best.score ? c : best), undefined);
  const sorted = [...frames].sort((a, b) => b.score - a.score);
  return sorted[Math.min(Math.max(1, combine.k), sorted.length) - 1];
}

/**
 * Scores every embedding against the policies (all, or `onlyIds`) and combines them.
 * `items[i]` says which frame (and tile) `embeddings[i]` is; items are grouped by frame.
 *
 * @throws ClipguardError as `CompiledPolicySet.judge`; CLIPGUARD_E_INTERNAL for no embeddings
 */
export function judgeEmbeddings(
  compiled: CompiledPolicySet,
  crops: { items: readonly CropItem[]; embeddings: readonly Float32Array[] },
  onlyIds: readonly string[] | undefined,
  combine: FrameCombine = DEFAULT_FRAME_COMBINE,
): ImageJudgement {
  const { items, embeddings } = crops;
  if (embeddings.length === 0 || embeddings.length !== items.length) {
    throw new ClipguardError("CLIPGUARD_E_INTERNAL", `cannot judge ${embeddings.length} embeddings for ${items.length} crops`);
  }
  const perItem = embeddings.map((e) => compiled.judge(e, onlyIds));
  const frames = new Set(items.map((i) => i.frame)).size;
  const byId = new Map(compiled.policies.map((p) => [p.id, p]));
  const policies = (perItem[0]?.policies ?? []).map((first, index): CombinedPolicyJudgement => {
    const policy = byId.get(first.id);
    if (policy === undefined) throw new ClipguardError("CLIPGUARD_E_INTERNAL", `judged an unknown policy ${first.id}`);
    const best = new Map<number, Candidate>();
    items.forEach((item, i) => {
      if (item.region !== undefined && !policy.tiles) return;
      const score = perItem[i]?.policies[index]?.score ?? -Infinity;
      const current = best.get(item.frame);
      if (current === undefined || score > current.score) best.set(item.frame, { item: i, score });
    });
    const chosen = combineFrames([...best.values()], combine) ?? { item: 0, score: first.score };
    const judged = perItem[chosen.item]?.policies[index] ?? first;
    const item = items[chosen.item];
    return {
      id: first.id,
      score: chosen.score,
      decision: decide(chosen.score, policy.thresholds),
      prompt: judged.prompt,
      frame: item?.frame ?? 0,
      ...(item?.region !== undefined ? { region: item.region } : {}),
    };
  });
  return { decision: mostSevere(policies.map((p) => p.decision)), frames, policies };
}

const round4 = (x: number): number => Math.round(x * 10_000) / 10_000;

/**
 * The verdict fields of a judgement: scores rounded to 4 decimals; `frame` per policy and
 * `frames` only for an animation of which several frames were scored; `region` when a tile decided.
 */
export function verdictFields(judgement: ImageJudgement): Pick<Verdict, "decision" | "policies" | "frames"> {
  const animated = judgement.frames > 1;
  return {
    decision: judgement.decision,
    policies: judgement.policies.map((p) => ({
      id: p.id,
      score: round4(p.score),
      decision: p.decision,
      prompt: p.prompt,
      ...(animated ? { frame: p.frame } : {}),
      ...(p.region !== undefined ? { region: p.region } : {}),
    })),
    ...(animated ? { frames: judgement.frames } : {}),
  };
}
