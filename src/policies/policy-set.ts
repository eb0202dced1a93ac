/**
 * A validated policies file with every default applied: what the rest of clipguard works with.
 */
import { createHash } from "node:crypto";
import { DEFAULT_LOGIT_SCALE, DEFAULT_SCORING, type PolicyFileSpec, type ScoringMode } from "./policy-schema.js";

/** At least one of the two is set, and `review <= block` when both are. */
export interface PolicyThresholds {
  readonly review?: number;
  readonly block?: number;
}

/** One policy, fully resolved. */
export interface Policy {
  readonly id: string;
  /** `""` when the file gives none. */
  readonly description: string;
  /** Trimmed, unique, at least one. */
  readonly prompts: readonly string[];
  /** Trimmed, unique; empty unless the file lists some (always non-empty for contrastive). */
  readonly negatives: readonly string[];
  readonly scoring: ScoringMode;
  /** Multiplies cosines before the softmax of contrastive scoring (from `defaults.logit_scale`). */
  readonly logitScale: number;
  readonly thresholds: PolicyThresholds;
  /** Whether large images are also scored in tiles (see crop-plan.ts). @default false */
  readonly tiles: boolean;
}

export interface PolicyDefaults {
  readonly scoring: ScoringMode;
  readonly logitScale: number;
}

export interface PolicySet {
  /** `policyVersion(policies)`: changes with any semantic edit, not with comments or layout. */
  readonly version: string;
  /** The file name the set was parsed from, as given. */
  readonly file: string;
  readonly defaults: PolicyDefaults;
  /** In file order. */
  readonly policies: readonly Policy[];
}

/** Apply defaults to a validated file. */
export function resolvePolicySet(spec: PolicyFileSpec, file: string): PolicySet {
  const defaults: PolicyDefaults = {
    scoring: spec.defaults?.scoring ?? DEFAULT_SCORING,
    logitScale: spec.defaults?.logit_scale ?? DEFAULT_LOGIT_SCALE,
  };
  const policies = spec.policies.map(
    (p): Policy =>
      Object.freeze({
        id: p.id,
        description: p.description ?? "",
        prompts: Object.freeze([...p.prompts]),
        negatives: Object.freeze([...(p.negatives ?? [])]),
        scoring: p.scoring ?? defaults.scoring,
        logitScale: defaults.logitScale,
        thresholds: Object.freeze(
          p.thresholds.review === undefined
            ? { block: p.thresholds.block }
            : p.thresholds.block === undefined
              ? { review: p.thresholds.review }
              : { review: p.thresholds.review, block: p.thresholds.block },
        ),
        tiles: p.tiles ?? false,
      }),
  );
  return Object.freeze({
    version: policyVersion(policies),
    file,
    defaults: Object.freeze(defaults),
    policies: Object.freeze(policies),
  });
}

/**
 * A short, stable hash of the resolved policies: the first 12 hex digits of SHA-256 over a
 * canonical JSON form with fixed key order. Comments, layout, key order in the file and whether a
 * value is written out or comes from `defaults` do not change it; any change to what is scored or
 * reported does (ids, order, texts, modes, thresholds, logit scale, tiles, descriptions).
 */
export function policyVersion(policies: readonly Policy[]): string {
  const canonical = policies.map((p) => [
    p.id,
    p.description,
    p.prompts,
    p.negatives,
    p.scoring,
    p.logitScale,
    [p.thresholds.review ?? null, p.thresholds.block ?? null],
    p.tiles,
  ]);
  return createHash("sha256")
    .update(JSON.stringify({ format: 1, policies: canonical }))
    .digest("hex")
    .slice(0, 12);
}
