/**
 * The shape of a policies file (`policies.yaml`), as zod schemas.
 *
 * These schemas check structure: types, unknown keys, lengths, id syntax and the rules that live
 * inside one object (duplicate prompts, `review <= block`). Rules that span objects (duplicate ids,
 * negatives required by contrastive scoring, threshold ranges that depend on the scoring mode,
 * which may come from `defaults`) are checked by `policy-cross-checks.ts`, so that they are
 * reported even when some other part of the file has a type error. Use `parsePolicies` to
 * validate a file; it runs both.
 */
import { z } from "zod";

/** How a policy turns cosines into a score. */
export const SCORING_MODES = ["similarity", "contrastive"] as const;
export type ScoringMode = (typeof SCORING_MODES)[number];

/** Limits that keep a hostile or runaway policies file from costing much. */
export const POLICY_LIMITS = {
  /** Largest accepted file, in bytes (1 MiB). */
  maxFileBytes: 1024 * 1024,
  /** YAML alias expansions allowed while building the data (blocks "billion laughs"). */
  maxAliasCount: 100,
  maxPolicies: 500,
  maxPromptsPerPolicy: 64,
  maxPromptChars: 300,
  maxDescriptionChars: 1000,
  maxIdChars: 64,
  maxLogitScale: 1000,
} as const;

/** Used when neither the policy nor `defaults` says otherwise. */
export const DEFAULT_SCORING: ScoringMode = "similarity";
/** CLIP's learned temperature, rounded; used by contrastive scoring. */
export const DEFAULT_LOGIT_SCALE = 100;

const L = POLICY_LIMITS;

/** A prompt or negative: trimmed, non-empty, bounded. */
const promptText = z
  .string()
  .trim()
  .min(1, "must not be empty")
  .max(L.maxPromptChars, `must be at most ${L.maxPromptChars} characters`);

/** A list of prompt texts where every text appears once (after trimming). */
function promptList(noun: "prompt" | "negative") {
  return z
    .array(promptText)
    .min(1, `needs at least one ${noun}`)
    .max(L.maxPromptsPerPolicy, `must have at most ${L.maxPromptsPerPolicy} ${noun}s`)
    .superRefine((texts, ctx) => {
      const firstIndex = new Map<string, number>();
      texts.forEach((text, index) => {
        const first = firstIndex.get(text);
        if (first === undefined) firstIndex.set(text, index);
        else ctx.addIssue({ code: "custom", path: [index], message: `duplicate ${noun} "${text}" (same as [${first}])` });
      });
    });
}

/**
 * Thresholds are checked for type here; their range depends on the scoring mode
 * (cosines in [-1, 1] for similarity, probabilities in [0, 1] for contrastive) and is checked
 * across objects.
 */
const thresholdsSchema = z
  .strictObject({
    review: z.number().optional(),
    block: z.number().optional(),
  })
  .superRefine((t, ctx) => {
    if (t.review === undefined && t.block === undefined) {
      ctx.addIssue({ code: "custom", message: "set at least one of review or block" });
    } else if (t.review !== undefined && t.block !== undefined && t.review > t.block) {
      ctx.addIssue({ code: "custom", message: `review (${t.review}) must be <= block (${t.block})` });
    }
  });

const scoringSchema = z.enum(SCORING_MODES);

export const policySchema = z
  .strictObject({
    id: z
      .string()
      .max(L.maxIdChars, `must be at most ${L.maxIdChars} characters`)
      .regex(/^[a-z0-9_-]+$/, "must be non-empty and use only a-z, 0-9, _ and -"),
    description: z
      .string()
      .trim()
      .max(L.maxDescriptionChars, `must be at most ${L.maxDescriptionChars} characters`)
      .optional(),
    prompts: promptList("prompt"),
    negatives: promptList("negative").optional(),
    scoring: scoringSchema.optional(),
    thresholds: thresholdsSchema,
    tiles: z.boolean().optional(),
  })
  .superRefine((policy, ctx) => {
    if (policy.negatives === undefined) return;
    const prompts = new Set(policy.prompts);
    policy.negatives.forEach((text, index) => {
      if (prompts.has(text)) {
        ctx.addIssue({
          code: "custom",
          path: ["negatives", index],
          message: `"${text}" is also a prompt; a text cannot count for and against the policy`,
        });
      }
    });
  });

export const defaultsSchema = z.strictObject({
  scoring: scoringSchema.optional(),
  logit_scale: z
    .number()
    .gt(0, `must be > 0 and <= ${L.maxLogitScale}`)
    .max(L.maxLogitScale, `must be > 0 and <= ${L.maxLogitScale}`)
    .optional(),
});

export const policyFileSchema = z.strictObject({
  version: z.literal(1, { error: "must be 1 (the only policies file format so far)" }),
  defaults: defaultsSchema.optional(),
  policies: z
    .array(policySchema)
    .min(1, "needs at least one policy")
    .max(L.maxPolicies, `must have at most ${L.maxPolicies} policies`),
});

/** A policies file as written, after validation (snake_case keys, optional fields unresolved). */
export type PolicyFileSpec = z.output<typeof policyFileSchema>;
/** One policy as written in the file. */
export type PolicySpec = PolicyFileSpec["policies"][number];

/**
 * The keys allowed in the mapping at `path` (a zod issue path), for "did you mean" hints on
 * unknown keys. Empty when `path` is not a mapping of the format.
 */
export function allowedKeysAt(path: readonly PropertyKey[]): readonly string[] {
  const [first, second, third] = path;
  if (path.length === 0) return Object.keys(policyFileSchema.shape);
  if (path.length === 1 && first === "defaults") return Object.keys(defaultsSchema.shape);
  if (first !== "policies" || typeof second !== "number") return [];
  if (path.length === 2) return Object.keys(policySchema.shape);
  if (path.length === 3 && third === "thresholds") return Object.keys(thresholdsSchema.shape);
  return [];
}
