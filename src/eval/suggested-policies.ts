/**
 * `--write`: the policies file with the suggested thresholds, everything else kept as written,
 * byte for byte. The `yaml` document API finds each threshold's scalar and its source range, and
 * only that range of the text is replaced: `setIn` + `toString` would also keep comments, but
 * re-renders every flow collection (`[a, b]` becomes `[ a, b ]`), touching lines nobody changed.
 *
 * Only thresholds the policy already sets are changed: a policy with `review` alone was written
 * never to block automatically, and a suggestion must not quietly change that.
 */
import { isMap, isScalar, isSeq, parseDocument } from "yaml";
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
  const edits: { start: number; end: number; value: string }[] = [];
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
        skipped.push({ id: evaluation.id, kind, reason: "no suggestion: see the report's notes" });
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
      const node = doc.getIn(["policies", index, "thresholds", kind], true);
      if (!isScalar(node) || node.range === undefined || node.range === null) {
        throw new ClipguardError("CLIPGUARD_E_INTERNAL", `${fileName}: no source position for ${evaluation.id}.thresholds.${kind}`);
      }
      edits.push({ start: node.range[0], end: node.range[1], value: String(to) });
      changes.push({ id: evaluation.id, kind, from, to });
    }
  });

  // from the end, so that earlier offsets stay valid
  let out = text;
  for (const edit of edits.sort((a, b) => b.start - a.start)) out = out.slice(0, edit.start) + edit.value + out.slice(edit.end);
  try {
    parsePolicies(out, fileName);
  } catch (err) {
    throw new ClipguardError("CLIPGUARD_E_INTERNAL", `the suggested policies file would not validate: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
  return { text: out, changes, skipped };
}
