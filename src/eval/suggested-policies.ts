/**
 * `--write`: the policies file with the suggested thresholds, everything else kept as written
 * (comments, key order, flow or block style), through the `yaml` package's document API.
 *
 * Only thresholds the policy already sets are changed: a policy with `review` alone was written
 * never to block automatically, and a suggestion must not quietly change that.
 */
import { isMap, isSeq, parseDocument } from "yaml";
import { parsePolicies } from "../policies/index.js";
import { ClipguardError } from "../shared/errors.js";
import type { PolicyEvaluation } from "./policy-evaluation.js";

export type ThresholdKind = "review" | "block";

export interface ThresholdChange {
  id: string;
  kind: ThresholdKind;
  from: number;
  to: number;
}

export interface ThresholdSkip {
  id: string;
  kind: ThresholdKind;
  reason: string;
}

export interface SuggestedPolicies {
  text: string;
  changes: ThresholdChange[];
  skipped: ThresholdSkip[];
}

/**
 * Applies the suggestions of `evaluations` to `text` (a policies file that already validated).
 * @throws ClipguardError `CLIPGUARD_E_INTERNAL` when the result would not validate (a bug)
 */
export function applySuggestions(text: string, fileName: string, evaluations: readonly PolicyEvaluation[]): SuggestedPolicies {
  const doc = parseDocument(text);
  const policies = doc.get("policies");
  const changes: ThresholdChange[] = [];
  const skipped: ThresholdSkip[] = [];
  if (!isSeq(policies)) throw new ClipguardError("CLIPGUARD_E_INTERNAL", `${fileName}: policies is not a list`);

  policies.items.forEach((item, index) => {
    if (!isMap(item)) return;
    const id = item.get("id");
    const evaluation = evaluations.find((e) => e.id === id);
    if (evaluation === undefined) return;
    const current = { review: evaluation.current.review?.threshold, block: evaluation.current.block?.threshold };
    const next = { ...current };
    for (const kind of ["review", "block"] as const) {
      const suggestion = evaluation.suggested[kind];
      if (current[kind] === undefined) {
        if (suggestion) skipped.push({ id: evaluation.id, kind, reason: `the policy sets no ${kind} threshold` });
      } else if (suggestion === null) {
        skipped.push({ id: evaluation.id, kind, reason: "no suggestion (see the report's notes)" });
      } else {
        next[kind] = suggestion.threshold;
      }
    }
    if (next.review !== undefined && next.block !== undefined && next.review > next.block) {
      // only when block kept its old value: a suggested review above it would not validate
      skipped.push({ id: evaluation.id, kind: "review", reason: `the suggested review ${next.review} is above the block threshold ${next.block}` });
      next.review = current.review;
    }
    for (const kind of ["review", "block"] as const) {
      const from = current[kind];
      const to = next[kind];
      if (from === undefined || to === undefined || from === to) continue;
      doc.setIn(["policies", index, "thresholds", kind], to);
      changes.push({ id: evaluation.id, kind, from, to });
    }
  });

  const out = doc.toString();
  try {
    parsePolicies(out, fileName);
  } catch (err) {
    throw new ClipguardError("CLIPGUARD_E_INTERNAL", `the suggested policies file would not validate: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
  return { text: out, changes, skipped };
}
