/**
 * One PNG per policy: the precision–recall curve (left) and the score histograms of positives and
 * negatives (right), with the current thresholds (dashed, hollow) and the suggested ones (solid,
 * filled) marked on both. The SVG is built here from numbers and escaped text only (never from
 * user-supplied SVG), then rasterized with sharp.
 */
import sharp from "sharp";
import { histogram } from "./metrics.js";
import type { OperatingPoint } from "./metrics.js";
import type { PolicyEvaluation } from "./policy-evaluation.js";

export const CHART_WIDTH = 1200;
export const CHART_HEIGHT = 560;

const PANEL = { top: 80, bottom: 470 };
const LEFT = { x0: 80, x1: 540 };
const RIGHT = { x0: 660, x1: 1160 };
const BINS = 30;
const COLOURS = { positive: "#d62728", benign: "#1f77b4", other: "#7f7f7f", review: "#ff7f0e", block: "#9467bd", curve: "#2c3e50" };

/** Text for SVG content or attributes: XML-escaped, control characters removed, length bounded. */
export function escapeXml(text: string, maxLength = 120): string {
  const clean = text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\ufffe\uffff]/g, "");
  const short = clean.length > maxLength ? `${clean.slice(0, maxLength - 1)}…` : clean;
  return short.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

const fmt = (x: number, digits = 3): string => (Number.isFinite(x) ? x.toFixed(digits) : "n/a");
const px = (x: number): string => x.toFixed(1);

function text(x: number, y: number, content: string, attrs = ""): string {
  return `<text x="${px(x)}" y="${px(y)}" ${attrs}>${escapeXml(content)}</text>`;
}

function axes(x0: number, x1: number, lo: number, hi: number, xLabel: string, yLabel: string, yMax: number, yTicks: number[]): string[] {
  const out = [
    `<line x1="${x0}" y1="${PANEL.bottom}" x2="${x1}" y2="${PANEL.bottom}" stroke="#333"/>`,
    `<line x1="${x0}" y1="${PANEL.top}" x2="${x0}" y2="${PANEL.bottom}" stroke="#333"/>`,
    text((x0 + x1) / 2, PANEL.bottom + 40, xLabel, 'text-anchor="middle" font-size="14"'),
    text(x0 - 55, (PANEL.top + PANEL.bottom) / 2, yLabel, `text-anchor="middle" font-size="14" transform="rotate(-90 ${x0 - 55} ${(PANEL.top + PANEL.bottom) / 2})"`),
  ];
  for (let i = 0; i <= 5; i++) {
    const v = lo + ((hi - lo) * i) / 5;
    const x = x0 + ((x1 - x0) * i) / 5;
    out.push(`<line x1="${px(x)}" y1="${PANEL.bottom}" x2="${px(x)}" y2="${PANEL.bottom + 5}" stroke="#333"/>`);
    out.push(text(x, PANEL.bottom + 20, fmt(v, 2), 'text-anchor="middle" font-size="12"'));
  }
  for (const v of yTicks) {
    const y = PANEL.bottom - ((PANEL.bottom - PANEL.top) * v) / yMax;
    out.push(`<line x1="${x0 - 5}" y1="${px(y)}" x2="${x1}" y2="${px(y)}" stroke="#ddd"/>`);
    out.push(text(x0 - 9, y + 4, yMax <= 1 ? fmt(v, 1) : String(v), 'text-anchor="end" font-size="12"'));
  }
  return out;
}

interface Mark {
  kind: "review" | "block";
  suggested: boolean;
  point: OperatingPoint;
}

function marks(e: PolicyEvaluation): Mark[] {
  const out: Mark[] = [];
  for (const kind of ["review", "block"] as const) {
    const current = e.current[kind];
    const suggested = e.suggested[kind];
    if (current) out.push({ kind, suggested: false, point: current });
    if (suggested) out.push({ kind, suggested: true, point: suggested });
  }
  return out;
}

function prPanel(e: PolicyEvaluation): string[] {
  const { x0, x1 } = LEFT;
  const X = (r: number) => x0 + (x1 - x0) * r;
  const Y = (p: number) => PANEL.bottom - (PANEL.bottom - PANEL.top) * p;
  const out = axes(x0, x1, 0, 1, "recall", "precision", 1, [0, 0.2, 0.4, 0.6, 0.8, 1]);
  out.push(text((x0 + x1) / 2, PANEL.top - 12, "precision–recall", 'text-anchor="middle" font-size="15" font-weight="bold"'));
  if (e.positives > 0 && e.curve.length > 0) {
    // precision_k holds over (recall_{k-1}, recall_k]: the area under this step line is the AP
    const first = e.curve[0] as OperatingPoint;
    const path = [`M ${px(X(0))} ${px(Y(first.precision))}`];
    let previous = 0;
    for (const p of e.curve) {
      if (p.recall !== previous) path.push(`L ${px(X(previous))} ${px(Y(p.precision))}`, `L ${px(X(p.recall))} ${px(Y(p.precision))}`);
      previous = p.recall;
    }
    out.push(`<path d="${path.join(" ")}" fill="none" stroke="${COLOURS.curve}" stroke-width="2"/>`);
  } else {
    out.push(text((x0 + x1) / 2, (PANEL.top + PANEL.bottom) / 2, "no positive examples", 'text-anchor="middle" font-size="14" fill="#888"'));
  }
  // marks often share a point (a separable set puts review and block at the same place):
  // their labels are stacked instead of drawn over each other
  const labelsAt = new Map<string, number>();
  for (const m of marks(e)) {
    const fill = m.suggested ? COLOURS[m.kind] : "white";
    const x = X(m.point.recall);
    const y = Y(m.point.precision);
    out.push(`<circle cx="${px(x)}" cy="${px(y)}" r="7" fill="${fill}" stroke="${COLOURS[m.kind]}" stroke-width="2.5"/>`);
    const key = `${px(x)},${px(y)}`;
    const stacked = labelsAt.get(key) ?? 0;
    labelsAt.set(key, stacked + 1);
    const label = `${m.suggested ? "suggested" : "current"} ${m.kind} ${fmt(m.point.threshold)}`;
    // below the point when it sits high on the chart, above it otherwise
    const dy = y < PANEL.top + 80 ? 24 + stacked * 15 : -14 - stacked * 15;
    out.push(text(x - 10, y + dy, label, `text-anchor="end" font-size="12" fill="${COLOURS[m.kind]}"`));
  }
  return out;
}

function histogramPanel(e: PolicyEvaluation): string[] {
  const { x0, x1 } = RIGHT;
  const all = [...e.scores.positive, ...e.scores.benign, ...e.scores.other, ...marks(e).map((m) => m.point.threshold)];
  let lo = all.length > 0 ? Math.min(...all) : 0;
  let hi = all.length > 0 ? Math.max(...all) : 1;
  const pad = Math.max((hi - lo) * 0.03, 0.005);
  lo -= pad;
  hi += pad;
  const series = (["positive", "benign", "other"] as const)
    .map((role) => ({ role, counts: histogram(e.scores[role], lo, hi, BINS) }))
    .filter((s) => e.scores[s.role].length > 0);
  const top = Math.max(1, ...series.flatMap((s) => s.counts));
  const step = Math.max(1, Math.ceil(top / 5));
  const yMax = step * Math.ceil(top / step);
  const ticks = Array.from({ length: yMax / step + 1 }, (_, i) => i * step);
  const X = (s: number) => x0 + ((x1 - x0) * (s - lo)) / (hi - lo);
  const H = (n: number) => ((PANEL.bottom - PANEL.top) * n) / yMax;
  const out = axes(x0, x1, lo, hi, "score", "images", yMax, ticks);
  out.push(text((x0 + x1) / 2, PANEL.top - 12, "score histograms", 'text-anchor="middle" font-size="15" font-weight="bold"'));
  const binWidth = (x1 - x0) / BINS;
  for (const s of series) {
    s.counts.forEach((count, bin) => {
      if (count === 0) return;
      const h = H(count);
      out.push(
        `<rect x="${px(x0 + bin * binWidth)}" y="${px(PANEL.bottom - h)}" width="${px(binWidth)}" height="${px(h)}" ` +
          `fill="${COLOURS[s.role]}" fill-opacity="0.45" stroke="${COLOURS[s.role]}"/>`,
      );
    });
  }
  marks(e).forEach((m, i) => {
    const x = X(m.point.threshold);
    const dash = m.suggested ? "" : ' stroke-dasharray="6 4"';
    out.push(`<line x1="${px(x)}" y1="${PANEL.top}" x2="${px(x)}" y2="${PANEL.bottom}" stroke="${COLOURS[m.kind]}" stroke-width="2"${dash}/>`);
    const label = `${m.suggested ? "suggested" : "current"} ${m.kind}`;
    out.push(text(x + 4, PANEL.top + 14 + i * 15, label, `font-size="11" fill="${COLOURS[m.kind]}"`));
  });
  return out;
}

function legend(e: PolicyEvaluation): string[] {
  const items: [string, string][] = [
    [COLOURS.positive, `positives (${e.positives})`],
    [COLOURS.benign, `benign (${e.benign})`],
  ];
  if (e.otherPolicies > 0) items.push([COLOURS.other, `other policies (${e.otherPolicies})`]);
  items.push([COLOURS.review, "review threshold"], [COLOURS.block, "block threshold"]);
  const out: string[] = [];
  let x = 80;
  for (const [colour, label] of items) {
    out.push(`<rect x="${x}" y="518" width="14" height="14" fill="${colour}" fill-opacity="0.6" stroke="${colour}"/>`);
    out.push(text(x + 20, 530, label, 'font-size="13"'));
    x += 40 + label.length * 7.5;
  }
  out.push(text(CHART_WIDTH - 40, 530, "dashed/hollow: current · solid/filled: suggested", 'text-anchor="end" font-size="12" fill="#555"'));
  return out;
}

/** The chart as SVG text. */
export function chartSvg(e: PolicyEvaluation): string {
  const summary = `AUC ${e.auc === null ? "n/a" : fmt(e.auc)} · AP ${e.averagePrecision === null ? "n/a" : fmt(e.averagePrecision)} · ${e.scoring}`;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${CHART_WIDTH}" height="${CHART_HEIGHT}" viewBox="0 0 ${CHART_WIDTH} ${CHART_HEIGHT}" font-family="DejaVu Sans, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    text(40, 34, e.id, 'font-size="20" font-weight="bold"'),
    text(CHART_WIDTH - 40, 34, summary, 'text-anchor="end" font-size="15"'),
    ...(e.description ? [text(40, 56, e.description, 'font-size="13" fill="#555"')] : []),
    ...prPanel(e),
    ...histogramPanel(e),
    ...legend(e),
    "</svg>",
  ];
  return parts.join("\n");
}

/** The chart as PNG bytes ({@link CHART_WIDTH} × {@link CHART_HEIGHT}). */
export async function chartPng(e: PolicyEvaluation): Promise<Buffer> {
  return sharp(Buffer.from(chartSvg(e), "utf8")).png().toBuffer();
}
