/**
 * How a chaos scenario reports what it did. A test calls `report(context, {...})` once, before
 * its assertions, so the figures of a failing run are reported too; the reliability reporter
 * (reliability-reporter.ts) turns them into docs/reliability.md. The figures travel in vitest's
 * task meta, which reaches the reporter from the test worker.
 */
import type { TestContext } from "vitest";

/** Totals the summary table adds up over all scenarios (each field optional per scenario). */
export interface ChaosSummary {
  jobsRun?: number;
  workersKilled?: number;
  redisRestarts?: number;
  hostileInputs?: number;
  ssrfForms?: number;
  /** Jobs without a verdict (must be 0). */
  lost?: number;
  /** Jobs with more than one verdict-stream entry (must be 0). */
  duplicated?: number;
  /** Slowest hostile input, enqueue to error verdict, ms. */
  worstHostileMs?: number;
  /** Highest worker RSS seen, MiB. */
  peakRssMiB?: number;
}

export interface ChaosFigures {
  /** Scenario title, e.g. "1. Crash". */
  title: string;
  /** What was done, in one or two sentences (the doc's text for the scenario). */
  method: string;
  /** What must hold for the scenario to pass. */
  criteria: string;
  summary: ChaosSummary;
  /** Further measured figures, shown as a table: name → value (with its unit in the name). */
  figures: Record<string, number | string>;
  /** Observations worth keeping (what was found, what was fixed). */
  notes?: string[];
}

declare module "vitest" {
  interface TaskMeta {
    chaos?: ChaosFigures;
  }
}

/** Attaches a scenario's figures to the running test. */
export function report(context: TestContext, figures: ChaosFigures): void {
  context.task.meta.chaos = figures;
}
