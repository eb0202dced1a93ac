/**
 * Writes the chaos suite's figures as markdown when the run ends: docs/reliability.md for the
 * full profile, .cache/chaos/reliability-quick.md for the quick one (CI must not change tracked
 * files). Every figure in the document comes from the run that wrote it.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Reporter, TestModule } from "vitest/node";
import type { ChaosFigures, ChaosSummary } from "./figures.js";
import { PROFILE } from "./profile.js";

interface ScenarioRow {
  figures: ChaosFigures;
  state: string;
  errors: string[];
}

const SUMMED = ["jobsRun", "workersKilled", "redisRestarts", "hostileInputs", "ssrfForms", "lost", "duplicated"] as const;
const MAXED = ["worstHostileMs", "peakRssMiB"] as const;
const SUMMARY_LABELS: Record<keyof ChaosSummary, string> = {
  jobsRun: "jobs run",
  workersKilled: "workers killed (SIGKILL)",
  redisRestarts: "Redis restarts",
  hostileInputs: "hostile inputs tried",
  ssrfForms: "SSRF URL forms tried",
  lost: "jobs lost",
  duplicated: "jobs duplicated in the verdict stream",
  worstHostileMs: "worst hostile-input time (ms)",
  peakRssMiB: "peak worker RSS (MiB)",
};

function redisVersion(): string {
  try {
    return execFileSync("redis-server", ["--version"], { encoding: "utf8" }).trim().split(" ").find((w) => w.startsWith("v="))?.slice(2) ?? "unknown";
  } catch {
    return "not found";
  }
}

const cell = (value: number | string): string => (typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toFixed(2)) : value.replaceAll("|", "\\|"));

export function renderReliability(rows: ScenarioRow[], startedAt: Date, seconds: number): string {
  const summary: Partial<Record<keyof ChaosSummary, number>> = {};
  for (const { figures } of rows) {
    for (const key of SUMMED) if (figures.summary[key] !== undefined) summary[key] = (summary[key] ?? 0) + figures.summary[key];
    for (const key of MAXED) if (figures.summary[key] !== undefined) summary[key] = Math.max(summary[key] ?? 0, figures.summary[key]);
  }
  const passed = rows.filter((r) => r.state === "passed").length;
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  const lines = [
    "# Reliability and security figures",
    "",
    `Written by \`${PROFILE === "full" ? "npm run test:chaos" : "npm run test:chaos:quick"}\` (profile \`${PROFILE}\`) on ${startedAt.toISOString()}; do not edit by hand, run the command again.`,
    `Machine: ${cpu}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, ${os.type()} ${os.release()}, Node ${process.version}, redis-server ${redisVersion()}.`,
    `Run time: ${(seconds / 60).toFixed(1)} min. Scenarios passed: ${passed} of ${rows.length}.`,
    "",
    "Every scenario runs against Redis servers the suite starts itself on their own ports and against real `clipguard worker` processes (dist/). The quick profile (`npm run test:chaos:quick`, run by CI) runs the same scenarios with smaller counts.",
    "",
    "## Summary",
    "",
    "| figure | value |",
    "|---|---|",
    ...(Object.keys(SUMMARY_LABELS) as (keyof ChaosSummary)[]).filter((k) => summary[k] !== undefined).map((k) => `| ${SUMMARY_LABELS[k]} | ${cell(summary[k]!)} |`),
    "",
  ];
  for (const row of rows) {
    const f = row.figures;
    lines.push(`## ${f.title}: ${row.state}`, "", f.method, "", `Pass: ${f.criteria}`, "", "| figure | value |", "|---|---|");
    for (const [name, value] of Object.entries(f.figures)) lines.push(`| ${name} | ${cell(value)} |`);
    lines.push("");
    for (const note of f.notes ?? []) lines.push(`- ${note}`);
    for (const error of row.errors) lines.push(`- **failure:** ${error.split("\n")[0]}`);
    if ((f.notes?.length ?? 0) + row.errors.length > 0) lines.push("");
  }
  return lines.join("\n");
}

export default class ReliabilityReporter implements Reporter {
  private readonly startedAt = new Date();

  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const rows: ScenarioRow[] = [];
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const figures = test.meta().chaos;
        if (figures === undefined) continue;
        const result = test.result();
        rows.push({ figures, state: result.state, errors: (result.errors ?? []).map((e) => e.message) });
      }
    }
    rows.sort((a, b) => a.figures.title.localeCompare(b.figures.title, "en", { numeric: true }));
    const seconds = (Date.now() - this.startedAt.getTime()) / 1000;
    const target = PROFILE === "full" ? path.resolve("docs/reliability.md") : path.resolve(".cache/chaos/reliability-quick.md");
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, renderReliability(rows, this.startedAt, seconds) + "\n");
    process.stdout.write(`chaos: figures of ${rows.length} scenarios written to ${path.relative(process.cwd(), target)}\n`);
  }
}
