/**
 * Problems found in a policies file, and the error that carries all of them.
 *
 * Every problem is one line: `file:line:col: path: message`, e.g.
 * `policies.yaml:7:5: policies[1].thresholds: review (0.9) must be <= block (0.8)`.
 * Problems about the YAML text itself (syntax, tags, size) have no data path and read
 * `file:line:col: message`.
 */
import type { z } from "zod";
import { ClipguardError } from "../shared/errors.js";
import { allowedKeysAt } from "./policy-schema.js";
import type { PathIssue } from "./policy-cross-checks.js";

export interface PolicyProblem {
  file: string;
  /** 1-based. */
  line: number;
  /** 1-based. */
  col: number;
  /** Data path such as `policies[1].thresholds`; empty for problems with the YAML text itself. */
  path: string;
  message: string;
}

/** `["policies", 1, "thresholds"]` → `policies[1].thresholds`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const segment of path) {
    if (typeof segment === "number") out += `[${segment}]`;
    else {
      const key = String(segment);
      if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) out += out === "" ? key : `.${key}`;
      else out += `[${JSON.stringify(key)}]`;
    }
  }
  return out;
}

export function formatProblem(problem: PolicyProblem): string {
  const where = `${problem.file}:${problem.line}:${problem.col}`;
  return problem.path === "" ? `${where}: ${problem.message}` : `${where}: ${problem.path}: ${problem.message}`;
}

/** Problems in file order (line, then column), exact duplicates removed. */
export function sortProblems(problems: readonly PolicyProblem[]): PolicyProblem[] {
  const seen = new Set<string>();
  const unique = problems.filter((p) => {
    const key = formatProblem(p);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return unique.sort((a, b) => a.line - b.line || a.col - b.col);
}

/** A policies file failed validation; `problems` lists every problem found, `message` one per line. */
export class PolicyValidationError extends ClipguardError {
  readonly problems: readonly PolicyProblem[];

  constructor(problems: readonly PolicyProblem[]) {
    super("CLIPGUARD_E_POLICIES", problems.map(formatProblem).join("\n"));
    this.name = "PolicyValidationError";
    this.problems = problems;
  }
}

/** An issue to locate in the YAML: `pointAtKey` marks issues about a key rather than its value. */
export interface LocatableIssue extends PathIssue {
  pointAtKey?: boolean;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

function unknownKeyMessage(key: string, allowed: readonly string[]): string {
  if (allowed.length === 0) return `unknown key "${key}"`;
  const best = allowed
    .map((candidate) => ({ candidate, distance: editDistance(key.toLowerCase(), candidate) }))
    .sort((a, b) => a.distance - b.distance)[0];
  const hint = best && best.distance <= (key.length >= 6 ? 3 : 2) && best.distance < key.length ? ` (did you mean "${best.candidate}"?)` : "";
  return `unknown key "${key}"${hint}; allowed keys: ${allowed.join(", ")}`;
}

const TYPE_NAMES: Record<string, string> = {
  array: "a list",
  object: "a mapping",
  string: "a string",
  number: "a finite number",
  boolean: "true or false",
};

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return "an empty value";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  const text = JSON.stringify(value);
  return `${typeof value} ${text.length > 40 ? `${text.slice(0, 37)}...` : text}`;
}

/** The value at `path` in the raw data, and whether its key exists at all. */
function lookup(raw: unknown, path: readonly PropertyKey[]): { present: boolean; value: unknown } {
  let value = raw;
  for (const segment of path) {
    if (typeof value !== "object" || value === null || !(segment in value)) return { present: false, value: undefined };
    value = (value as Record<PropertyKey, unknown>)[segment];
  }
  return { present: true, value };
}

function toPath(path: readonly PropertyKey[]): (string | number)[] {
  return path.map((segment) => (typeof segment === "number" ? segment : String(segment)));
}

/** Rewrite a zod issue as problems a person can act on (one zod issue may name several keys). */
export function describeZodIssue(issue: z.core.$ZodIssue, raw: unknown): LocatableIssue[] {
  const path = toPath(issue.path);
  if (issue.code === "unrecognized_keys") {
    const allowed = allowedKeysAt(path);
    return issue.keys.map((key) => ({ path: [...path, key], message: unknownKeyMessage(key, allowed), pointAtKey: true }));
  }
  const at = lookup(raw, path);
  const key = path.at(-1);
  if (!at.present && typeof key === "string" && (issue.code === "invalid_type" || issue.code === "invalid_value")) {
    return [{ path: path.slice(0, -1), message: `missing required key "${key}"` }];
  }
  if (issue.code === "invalid_type") {
    const expected = TYPE_NAMES[issue.expected] ?? issue.expected;
    const hint =
      issue.expected === "array" && typeof at.value === "string" ? " (write a YAML list: [a, b] or one '- item' per line)" : "";
    return [{ path, message: `must be ${expected}, got ${describeValue(at.value)}${hint}` }];
  }
  if (issue.code === "invalid_value" && issue.values.length > 1) {
    return [{ path, message: `must be one of ${issue.values.map(String).join(", ")}, got ${describeValue(at.value)}` }];
  }
  // The schema words every other message itself.
  return [{ path, message: issue.message }];
}
