/**
 * Policies file → validated, resolved `PolicySet`. The boundary where YAML text becomes types.
 *
 * Every problem found is reported at once, each with file, line and column (see
 * `policy-problems.ts` for the format). Hostile input is bounded: files over 1 MiB, YAML alias
 * bombs (more than `POLICY_LIMITS.maxAliasCount` alias expansions) and tags other than the plain
 * YAML core types are rejected.
 */
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { isMap, isNode, isScalar, isSeq, LineCounter, parseDocument, visit, type Document } from "yaml";
import { ClipguardError } from "../shared/errors.js";
import { crossCheckPolicies } from "./policy-cross-checks.js";
import {
  describeZodIssue,
  formatPath,
  PolicyValidationError,
  sortProblems,
  type LocatableIssue,
  type PolicyProblem,
} from "./policy-problems.js";
import { POLICY_LIMITS, policyFileSchema } from "./policy-schema.js";
import { resolvePolicySet, type PolicySet } from "./policy-set.js";
import { offsetOfPath, positionOf } from "./yaml-locations.js";

/** Tags a policies file may spell out; anything else (`!!binary`, `!foo`, `!!python/…`) is refused. */
const ALLOWED_TAGS = new Set(
  ["str", "int", "float", "bool", "null", "seq", "map"].map((name) => `tag:yaml.org,2002:${name}`),
);

const LIMIT_TEXT = `${POLICY_LIMITS.maxFileBytes} bytes (1 MiB)`;

function tooLarge(fileName: string, bytes: number): PolicyValidationError {
  return new PolicyValidationError([
    { file: fileName, line: 1, col: 1, path: "", message: `the file is ${bytes} bytes; policies files are limited to ${LIMIT_TEXT}` },
  ]);
}

function shortTag(tag: string): string {
  return tag.startsWith("tag:yaml.org,2002:") ? `!!${tag.slice("tag:yaml.org,2002:".length)}` : tag;
}

/** The text of the mapping key that starts at `offset`, if any. */
function keyAt(doc: Document, offset: number): string | undefined {
  let key: string | undefined;
  visit(doc, {
    Pair(_key, pair) {
      if (isScalar(pair.key) && pair.key.range?.[0] === offset) {
        key = String(pair.key.value);
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return key;
}

/** Problems with the YAML text itself: syntax, duplicate keys, tags. `fatal` means the data is not usable. */
function yamlProblems(doc: Document, text: string, at: (offset: number) => Omit<PolicyProblem, "path" | "message">) {
  const problems: PolicyProblem[] = [];
  let fatal = false;
  for (const error of doc.errors) {
    if (error.code === "DUPLICATE_KEY") {
      const key = keyAt(doc, error.pos[0]) ?? text.slice(error.pos[0], error.pos[1]);
      problems.push({ ...at(error.pos[0]), path: "", message: `duplicate key ${JSON.stringify(key)}: each key may appear once per mapping` });
    } else {
      fatal = true;
      problems.push({ ...at(error.pos[0]), path: "", message: `YAML syntax error: ${error.message}` });
    }
  }
  for (const warning of doc.warnings) {
    // Unresolved tags are reported by the tag walk below, with the tag spelled out.
    if (warning.code === "TAG_RESOLVE_FAILED") continue;
    problems.push({ ...at(warning.pos[0]), path: "", message: `YAML problem: ${warning.message}` });
  }
  visit(doc, (_key, node) => {
    if (isNode(node) && node.tag !== undefined && !ALLOWED_TAGS.has(node.tag)) {
      problems.push({
        ...at(node.range?.[0] ?? 0),
        path: "",
        message: `YAML tag ${shortTag(node.tag)} is not allowed: write plain strings, numbers, booleans, lists and mappings`,
      });
    }
  });
  return { problems, fatal };
}

function firstAliasOffset(doc: Document): number {
  let offset = 0;
  visit(doc, {
    Alias(_key, node) {
      offset = node.range?.[0] ?? 0;
      return visit.BREAK;
    },
  });
  return offset;
}

function describeRoot(doc: Document): string | undefined {
  if (isMap(doc.contents)) return undefined;
  const got = doc.contents === null ? "the file is empty" : isSeq(doc.contents) ? "it is a list" : "it is a single value";
  return `the file must be a YAML mapping with the keys version and policies, but ${got}`;
}

/**
 * Validate a policies file and resolve its defaults.
 *
 * @param text the file's contents
 * @param fileName used in problem messages only
 * @throws PolicyValidationError (code `CLIPGUARD_E_POLICIES`) listing every problem found
 */
export function parsePolicies(text: string, fileName: string): PolicySet {
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > POLICY_LIMITS.maxFileBytes) throw tooLarge(fileName, bytes);

  const lineCounter = new LineCounter();
  const at = (offset: number) => ({ file: fileName, ...positionOf(lineCounter, offset) });
  const fail = (problems: PolicyProblem[]) => new PolicyValidationError(sortProblems(problems));

  let doc: Document;
  try {
    doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, strict: true, schema: "core", merge: false });
  } catch (err) {
    // The parser recurses; absurd nesting can exhaust the stack.
    const reason = err instanceof Error ? err.message : String(err);
    throw fail([{ file: fileName, line: 1, col: 1, path: "", message: `the YAML could not be parsed: ${reason}` }]);
  }

  const { problems, fatal } = yamlProblems(doc, text, at);
  if (fatal) throw fail(problems);
  const rootProblem = describeRoot(doc);
  if (rootProblem !== undefined) {
    throw fail([...problems, { ...at(0), path: "", message: rootProblem }]);
  }

  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: POLICY_LIMITS.maxAliasCount });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    const message = /alias count/i.test(reason)
      ? `too many YAML alias expansions (limit ${POLICY_LIMITS.maxAliasCount}); anchors and aliases must not multiply the data`
      : `YAML alias problem: ${reason}`;
    throw fail([...problems, { ...at(firstAliasOffset(doc)), path: "", message }]);
  }

  const issues: LocatableIssue[] = [];
  const parsed = policyFileSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) for (const issue of parsed.error.issues) issues.push(...describeZodIssue(issue, raw));
  issues.push(...crossCheckPolicies(raw));
  for (const issue of issues) {
    problems.push({ ...at(offsetOfPath(doc, issue.path, issue.pointAtKey)), path: formatPath(issue.path), message: issue.message });
  }

  if (problems.length > 0 || !parsed.success) throw fail(problems);
  return resolvePolicySet(parsed.data, fileName);
}

function readFailure(path: string, err: unknown): ClipguardError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const reason =
    code === "ENOENT"
      ? "no such file"
      : code === "EACCES" || code === "EPERM"
        ? "permission denied"
        : code === "EISDIR"
          ? "it is a directory, not a file"
          : err instanceof Error
            ? err.message
            : String(err);
  return new ClipguardError("CLIPGUARD_E_POLICIES", `cannot read the policies file ${path}: ${reason}`, { cause: err });
}

/**
 * Read and validate a policies file. The size limit is checked before reading.
 *
 * @throws ClipguardError `CLIPGUARD_E_POLICIES` when the file cannot be read, and
 *   PolicyValidationError (same code) when it is invalid
 */
export async function loadPolicyFile(path: string): Promise<PolicySet> {
  let text: string;
  try {
    // O_NONBLOCK: opening a FIFO must not hang startup; the regular-file check below rejects it.
    const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw new ClipguardError("CLIPGUARD_E_POLICIES", `cannot read the policies file ${path}: it is not a regular file`);
      if (info.size > POLICY_LIMITS.maxFileBytes) throw tooLarge(path, info.size);
      text = await handle.readFile({ encoding: "utf8" });
    } finally {
      await handle.close();
    }
  } catch (err) {
    if (err instanceof ClipguardError) throw err;
    throw readFailure(path, err);
  }
  return parsePolicies(text, path);
}
