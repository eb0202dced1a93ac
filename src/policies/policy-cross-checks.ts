/**
 * Rules of the policies format that span objects, checked on the raw parsed YAML.
 *
 * They run on `unknown` data (not on zod's output) so that they still report their problems when
 * another part of the file fails the schema: a person fixing the file should see every problem at
 * once. Each check looks only at the fields it needs and skips fields of the wrong type (the schema
 * reports those).
 */
import { DEFAULT_SCORING, SCORING_MODES, type ScoringMode } from "./policy-schema.js";

/** A problem at a data path, before it is located in the YAML text. */
export interface PathIssue {
  path: (string | number)[];
  message: string;
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

function asScoring(value: unknown): ScoringMode | undefined {
  return SCORING_MODES.find((mode) => mode === value);
}

/** Valid score ranges per scoring mode, with the reason a person needs to pick a threshold. */
const THRESHOLD_RANGE: Record<ScoringMode, { min: number; max: number; why: string }> = {
  similarity: { min: -1, max: 1, why: "similarity scores are cosines" },
  contrastive: { min: 0, max: 1, why: "contrastive scores are probabilities" },
};

/** Checks that need more than one object of the file: see the module comment. */
export function crossCheckPolicies(raw: unknown): PathIssue[] {
  const issues: PathIssue[] = [];
  const root = asRecord(raw);
  if (!root || !Array.isArray(root.policies)) return issues;

  const defaultScoring = asScoring(asRecord(root.defaults)?.scoring) ?? DEFAULT_SCORING;
  const hasDefaultScoring = asScoring(asRecord(root.defaults)?.scoring) !== undefined;
  const firstIndexOfId = new Map<string, number>();

  root.policies.forEach((item: unknown, index) => {
    const policy = asRecord(item);
    if (!policy) return;
    const at = (...rest: (string | number)[]) => ["policies", index, ...rest];

    if (typeof policy.id === "string") {
      const first = firstIndexOfId.get(policy.id);
      if (first === undefined) firstIndexOfId.set(policy.id, index);
      else issues.push({ path: at("id"), message: `duplicate id "${policy.id}" (already used by policies[${first}])` });
    }

    const scoring = asScoring(policy.scoring) ?? defaultScoring;
    const scoringSource = policy.scoring !== undefined ? "" : hasDefaultScoring ? " (from defaults)" : " (the default)";

    if (scoring === "contrastive" && policy.negatives === undefined) {
      issues.push({
        path: at(),
        message:
          `scoring is contrastive${scoringSource}, so negatives are required: ` +
          `add a list of texts the image should be compared against (e.g. negatives: [a photo of a toy])`,
      });
    }

    const thresholds = asRecord(policy.thresholds);
    if (!thresholds) return;
    const range = THRESHOLD_RANGE[scoring];
    for (const level of ["review", "block"] as const) {
      const value = thresholds[level];
      if (typeof value !== "number" || !Number.isFinite(value)) continue;
      if (value < range.min || value > range.max) {
        issues.push({
          path: at("thresholds", level),
          message:
            `${value} is out of range: with ${scoring} scoring${scoringSource} thresholds must be ` +
            `between ${range.min} and ${range.max} (${range.why})`,
        });
      }
    }
  });
  return issues;
}
