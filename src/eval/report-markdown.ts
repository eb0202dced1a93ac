/** `report.md`: the evaluation for people, from the same data as `report.json`. No I/O. */
import type { EvalReport, PolicyReport } from "./eval-report.js";
import type { OperatingPoint } from "./metrics.js";
import type { Comparison } from "./prompt-comparison.js";

/** A table cell: pipes and line breaks in paths, prompts and messages would break the table. */
export function mdCell(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\|/g, "\\|").replace(/[\r\n]+/g, " ");
}

const num = (x: number | null | undefined, digits = 4): string => (x === null || x === undefined ? "–" : x.toFixed(digits));
const signed = (x: number | null): string => (x === null ? "–" : `${x >= 0 ? "+" : ""}${x.toFixed(4)}`);
const threshold = (x: number | undefined): string => (x === undefined ? "–" : String(x));

const NEGATIVES_TEXT = {
  all:
    "every other labelled image: benign ones and those labelled only with other policies, because in production every " +
    "policy sees every image and a threshold that fires on another policy's examples is a false positive someone pays for",
  benign: "benign images only (`--negatives benign`); images labelled only with other policies are left out of a policy's metrics",
} as const;

function pointRow(label: string, p: OperatingPoint | null): string {
  if (p === null) return `| ${label} | – | | | | | | | |`;
  return `| ${label} | ${threshold(p.threshold)} | ${p.tp} | ${p.fp} | ${p.fn} | ${p.tn} | ${num(p.precision)} | ${num(p.recall)} | ${num(p.f1)} |`;
}

function policySection(r: PolicyReport): string[] {
  const out = [`## \`${r.id}\``, ""];
  if (r.description) out.push(mdCell(r.description), "");
  out.push(
    `${r.positives} positives, ${r.negatives} negatives (${r.benign} benign, ${r.otherPolicies} of other policies) · ` +
      `${r.scoring} scoring · ROC AUC **${num(r.auc)}** · average precision **${num(r.averagePrecision)}**`,
    "",
    `![${r.id}](${r.chart})`,
    "",
    "| | threshold | tp | fp | fn | tn | precision | recall | F1 |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    pointRow("current review", r.current.review),
    pointRow("current block", r.current.block),
    pointRow("**suggested review**", r.suggested.review),
    pointRow("**suggested block**", r.suggested.block),
    "",
  );
  for (const note of r.notes) out.push(`- ${mdCell(note)}`);
  if (r.notes.length > 0) out.push("");
  if (r.table.length > 0) {
    out.push("<details><summary>precision / recall / F1 by threshold</summary>", "");
    out.push("| threshold | precision | recall | F1 | tp | fp | fn | tn |", "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (const p of r.table) {
      out.push(`| ${threshold(p.threshold)} | ${num(p.precision)} | ${num(p.recall)} | ${num(p.f1)} | ${p.tp} | ${p.fp} | ${p.fn} | ${p.tn} |`);
    }
    out.push("", "</details>", "");
  }
  const hardest = [
    ...r.hardest.positives.map((h) => `| positive | ${num(h.score)} | ${mdCell(h.path)} |`),
    ...r.hardest.negatives.map((h) => `| negative | ${num(h.score)} | ${mdCell(h.path)} |`),
  ];
  if (hardest.length > 0) {
    out.push("Hardest examples (lowest-scoring positives, highest-scoring negatives; check these for mislabels):", "");
    out.push("| label | score | image |", "| --- | --- | --- |", ...hardest, "");
  }
  return out;
}

function compareSection(c: Comparison, baseFile: string): string[] {
  const out = [
    `## Compare: \`${mdCell(c.otherFile)}\` against \`${mdCell(baseFile)}\``,
    "",
    "Same images, same embeddings. Δ = other − base; positive means the other file ranks this policy's examples better.",
    "",
    "| policy | in | AUC base | AUC other | Δ AUC | AP base | AP other | Δ AP |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const p of c.policies) {
    out.push(
      `| \`${p.id}\` | ${p.in} | ${num(p.base?.auc)} | ${num(p.other?.auc)} | ${signed(p.aucDelta)} | ` +
        `${num(p.base?.averagePrecision)} | ${num(p.other?.averagePrecision)} | ${signed(p.averagePrecisionDelta)} |`,
    );
  }
  const changed = c.policies.flatMap((p) => p.prompts.filter((q) => q.in !== "both").map((q) => ({ id: p.id, q })));
  out.push("");
  if (changed.length === 0) out.push("Both files have the same prompts.", "");
  else {
    out.push("Prompts in one file only, with the AUC each reaches on its own:", "", "| policy | prompt | only in | AUC alone |", "| --- | --- | --- | --- |");
    for (const { id, q } of changed) out.push(`| \`${id}\` | ${mdCell(q.prompt)} | ${q.in} | ${num(q.in === "base" ? q.baseAuc : q.otherAuc)} |`);
    out.push("");
  }
  return out;
}

export function reportMarkdown(report: EvalReport): string {
  const i = report.images;
  const out = [
    "# clipguard eval report",
    "",
    `- model: ${mdCell(report.model.name)} (fingerprint \`${report.model.fingerprint}\`, variant ${report.model.variant})`,
    `- policies: \`${mdCell(report.policies.file)}\` (version \`${report.policies.version}\`)`,
    `- labels: \`${mdCell(report.labels.source)}\` (${report.labels.format}): ${report.labels.images} images, ${report.labels.benign} benign`,
    `- images: ${i.embedded} embedded (${i.visionTowerRuns} vision-tower runs), ${i.fromCache} from the cache (\`${mdCell(report.cache.dir)}\`), ${i.failed} failed`,
    `- targets: review at recall ≥ ${report.targets.reviewRecall}, block at precision ≥ ${report.targets.blockPrecision}`,
    `- negatives of a policy: ${NEGATIVES_TEXT[report.negatives]}`,
    `- an image is flagged when its score is ≥ the threshold; a suggested threshold sits in the middle of the gap between the lowest flagged score and the next lower one`,
    "",
    "| policy | positives | negatives | AUC | AP | review: current → suggested | block: current → suggested |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...report.results.map(
      (r) =>
        `| \`${r.id}\` | ${r.positives} | ${r.negatives} | ${num(r.auc)} | ${num(r.averagePrecision)} | ` +
        `${threshold(r.current.review?.threshold)} → ${threshold(r.suggested.review?.threshold)} | ` +
        `${threshold(r.current.block?.threshold)} → ${threshold(r.suggested.block?.threshold)} |`,
    ),
    "",
  ];
  for (const r of report.results) out.push(...policySection(r));
  if (report.failures.length > 0) {
    out.push("## Images that could not be evaluated", "", "| image | labelled at | code | message |", "| --- | --- | --- | --- |");
    for (const f of report.failures) out.push(`| ${mdCell(f.path)} | ${mdCell(f.origin)} | \`${f.code}\` | ${mdCell(f.message)} |`);
    out.push("");
  }
  if (report.suggestedPolicies) {
    const s = report.suggestedPolicies;
    out.push(`## Suggested policies file`, "", `Written to \`${mdCell(s.file)}\`.`, "");
    for (const c of s.changes) out.push(`- \`${c.id}\` ${c.kind}: ${c.from} → ${c.to}`);
    for (const k of s.skipped) out.push(`- \`${k.id}\` ${k.kind}: not changed (${mdCell(k.reason)})`);
    out.push("");
  }
  if (report.compare) out.push(...compareSection(report.compare, report.policies.file));
  return out.join("\n");
}
