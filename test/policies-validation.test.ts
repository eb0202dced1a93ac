import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClipguardError } from "../src/shared/errors.js";
import { loadPolicyFile, parsePolicies, PolicyValidationError, type PolicyProblem } from "../src/policies/index.js";

const fixture = (name: string) => join(import.meta.dirname, "fixtures", "policies", name);
const readFixture = (name: string) => readFile(fixture(name), "utf8");

/** The problems `text` is rejected with, formatted as `line:col: path: message` (file name dropped). */
function problemsOf(text: string): string[] {
  try {
    parsePolicies(text, "policies.yaml");
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyValidationError);
    const error = err as PolicyValidationError;
    expect(error.code).toBe("CLIPGUARD_E_POLICIES");
    return error.problems.map((p: PolicyProblem) => `${p.line}:${p.col}: ${p.path === "" ? "" : `${p.path}: `}${p.message}`);
  }
  throw new Error("expected the policies to be rejected");
}

/** A valid one-policy file with `policy` as the body of its only list item (indented 4). */
const onePolicy = (policy: string) => `version: 1\npolicies:\n  - ${policy.trim().split("\n").join("\n    ")}\n`;

describe("parsePolicies rejects each problem with its line and column", () => {
  const cases: { name: string; yaml: string; expected: string }[] = [
    { name: "YAML syntax error", yaml: "version: 1\npolicies: [\n", expected: "3:1: YAML syntax error:" },
    { name: "duplicate YAML key", yaml: "version: 1\nversion: 1\npolicies: []\n", expected: '2:1: duplicate key "version"' },
    { name: "empty file", yaml: "", expected: "1:1: the file must be a YAML mapping" },
    { name: "list at the top", yaml: "- id: a\n", expected: "1:1: the file must be a YAML mapping with the keys version and policies, but it is a list" },
    { name: "scalar at the top", yaml: "hello\n", expected: "1:1: the file must be a YAML mapping" },
    { name: "unknown top-level key", yaml: "version: 1\npolicy: []\npolicies: []\n", expected: '2:1: policy: unknown key "policy" (did you mean "policies"?)' },
    { name: "wrong version", yaml: "version: 2\npolicies: []\n", expected: "1:10: version: must be 1" },
    { name: "missing version", yaml: onePolicy("id: a\nprompts: [x]\nthresholds: {block: 0.5}").slice(11), expected: '1:1: missing required key "version"' },
    { name: "no policies", yaml: "version: 1\npolicies: []\n", expected: "2:1: policies: needs at least one policy" },
    { name: "policies not a list", yaml: "version: 1\npolicies: {a: 1}\n", expected: "2:1: policies: must be a list, got a mapping" },
    { name: "unknown defaults key", yaml: "version: 1\ndefaults:\n  scale: 3\npolicies: []\n", expected: '3:3: defaults.scale: unknown key "scale"' },
    { name: "logit_scale zero", yaml: "version: 1\ndefaults: {logit_scale: 0}\n", expected: "2:25: defaults.logit_scale: must be > 0 and <= 1000" },
    { name: "logit_scale too big", yaml: "version: 1\ndefaults: {logit_scale: 1001}\n", expected: "2:25: defaults.logit_scale: must be > 0 and <= 1000" },
    { name: "bad default scoring", yaml: "version: 1\ndefaults: {scoring: cosine}\n", expected: '2:21: defaults.scoring: must be one of similarity, contrastive, got string "cosine"' },
    { name: "bad id", yaml: onePolicy("id: Guns!\nprompts: [x]\nthresholds: {block: 0.5}"), expected: "3:9: policies[0].id: must be non-empty and use only a-z, 0-9, _ and -" },
    { name: "id not a string", yaml: onePolicy("id: 12\nprompts: [x]\nthresholds: {block: 0.5}"), expected: "3:9: policies[0].id: must be a string, got number 12" },
    { name: "missing id", yaml: onePolicy("prompts: [x]\nthresholds: {block: 0.5}"), expected: '3:5: policies[0]: missing required key "id"' },
    { name: "unknown policy key", yaml: onePolicy("id: a\nprompt: [x]\nprompts: [x]\nthresholds: {block: 0.5}"), expected: '4:5: policies[0].prompt: unknown key "prompt" (did you mean "prompts"?)' },
    { name: "empty prompt list", yaml: onePolicy("id: a\nprompts: []\nthresholds: {block: 0.5}"), expected: "4:5: policies[0].prompts: needs at least one prompt" },
    { name: "prompts as a string", yaml: onePolicy("id: a\nprompts: a gun\nthresholds: {block: 0.5}"), expected: "4:14: policies[0].prompts: must be a list, got string \"a gun\" (write a YAML list" },
    { name: "prompts left empty", yaml: onePolicy("id: a\nprompts:\nthresholds: {block: 0.5}"), expected: "4:5: policies[0].prompts: must be a list, got an empty value" },
    { name: "blank prompt", yaml: onePolicy('id: a\nprompts: [x, "   "]\nthresholds: {block: 0.5}'), expected: "4:18: policies[0].prompts[1]: must not be empty" },
    { name: "prompt not a string", yaml: onePolicy("id: a\nprompts: [x, 3]\nthresholds: {block: 0.5}"), expected: "4:18: policies[0].prompts[1]: must be a string, got number 3" },
    { name: "prompt too long", yaml: onePolicy(`id: a\nprompts: [${"x".repeat(301)}]\nthresholds: {block: 0.5}`), expected: "4:15: policies[0].prompts[0]: must be at most 300 characters" },
    { name: "too many prompts", yaml: onePolicy(`id: a\nprompts: [${Array.from({ length: 65 }, (_, i) => `p${i}`).join(", ")}]\nthresholds: {block: 0.5}`), expected: "4:5: policies[0].prompts: must have at most 64 prompts" },
    { name: "duplicate prompt after trimming", yaml: onePolicy('id: a\nprompts: [a gun, " a gun"]\nthresholds: {block: 0.5}'), expected: '4:22: policies[0].prompts[1]: duplicate prompt "a gun" (same as [0])' },
    { name: "negative that is also a prompt", yaml: onePolicy("id: a\nprompts: [a gun]\nnegatives: [a gun]\nthresholds: {block: 0.5}"), expected: '5:17: policies[0].negatives[0]: "a gun" is also a prompt' },
    { name: "missing thresholds", yaml: onePolicy("id: a\nprompts: [x]"), expected: '3:5: policies[0]: missing required key "thresholds"' },
    { name: "empty thresholds", yaml: onePolicy("id: a\nprompts: [x]\nthresholds: {}"), expected: "5:5: policies[0].thresholds: set at least one of review or block" },
    { name: "inverted thresholds", yaml: onePolicy("id: a\nprompts: [x]\nthresholds: { review: 0.9, block: 0.8 }"), expected: "5:5: policies[0].thresholds: review (0.9) must be <= block (0.8)" },
    { name: "threshold not a number", yaml: onePolicy("id: a\nprompts: [x]\nthresholds: {block: high}"), expected: '5:25: policies[0].thresholds.block: must be a finite number, got string "high"' },
    { name: "threshold .inf", yaml: onePolicy("id: a\nprompts: [x]\nthresholds: {block: .inf}"), expected: "5:25: policies[0].thresholds.block: must be a finite number, got Infinity" },
    { name: "unknown threshold key", yaml: onePolicy("id: a\nprompts: [x]\nthresholds: {block: 0.5, alert: 0.2}"), expected: '5:30: policies[0].thresholds.alert: unknown key "alert"; allowed keys: review, block' },
    { name: "similarity threshold above 1", yaml: onePolicy("id: a\nprompts: [x]\nthresholds: {block: 1.5}"), expected: "5:25: policies[0].thresholds.block: 1.5 is out of range: with similarity scoring (the default) thresholds must be between -1 and 1 (similarity scores are cosines)" },
    { name: "contrastive threshold below 0", yaml: onePolicy("id: a\nprompts: [x]\nnegatives: [y]\nscoring: contrastive\nthresholds: {review: -0.2}"), expected: "7:26: policies[0].thresholds.review: -0.2 is out of range: with contrastive scoring thresholds must be between 0 and 1" },
    { name: "contrastive without negatives", yaml: onePolicy("id: a\nprompts: [x]\nscoring: contrastive\nthresholds: {block: 0.5}"), expected: "3:5: policies[0]: scoring is contrastive, so negatives are required" },
    { name: "contrastive from defaults without negatives", yaml: `version: 1\ndefaults: {scoring: contrastive}\npolicies:\n  - id: a\n    prompts: [x]\n    thresholds: {block: 0.5}\n`, expected: "4:5: policies[0]: scoring is contrastive (from defaults), so negatives are required" },
    { name: "empty negatives", yaml: onePolicy("id: a\nprompts: [x]\nnegatives: []\nthresholds: {block: 0.5}"), expected: "5:5: policies[0].negatives: needs at least one negative" },
    { name: "bad scoring", yaml: onePolicy("id: a\nprompts: [x]\nscoring: clip\nthresholds: {block: 0.5}"), expected: '5:14: policies[0].scoring: must be one of similarity, contrastive, got string "clip"' },
    { name: "tiles not a boolean", yaml: onePolicy("id: a\nprompts: [x]\ntiles: yes\nthresholds: {block: 0.5}"), expected: '5:12: policies[0].tiles: must be true or false, got string "yes"' },
    { name: "duplicate ids", yaml: `version: 1\npolicies:\n  - {id: a, prompts: [x], thresholds: {block: 0.5}}\n  - {id: a, prompts: [y], thresholds: {block: 0.5}}\n`, expected: '4:10: policies[1].id: duplicate id "a" (already used by policies[0])' },
  ];

  it.each(cases)("$name", ({ yaml, expected }) => {
    const problems = problemsOf(yaml);
    expect(problems.some((p) => p.startsWith(expected)), `got:\n${problems.join("\n")}`).toBe(true);
  });
});

describe("parsePolicies reports every problem at once", () => {
  it("lists all problems of many-problems.yaml in file order, one per line of the message", async () => {
    const text = await readFixture("many-problems.yaml");
    let error: PolicyValidationError | undefined;
    try {
      parsePolicies(text, "many-problems.yaml");
    } catch (err) {
      error = err as PolicyValidationError;
    }
    expect(error).toBeInstanceOf(PolicyValidationError);
    const expected = [
      "many-problems.yaml:4:16: defaults.logit_scale: must be > 0 and <= 1000",
      "many-problems.yaml:6:5: policies[0]: scoring is contrastive (from defaults), so negatives are required",
      "many-problems.yaml:6:9: policies[0].id: must be non-empty and use only a-z, 0-9, _ and -",
      "many-problems.yaml:7:5: policies[0].prompts: needs at least one prompt",
      "many-problems.yaml:8:5: policies[0].thresholds: review (0.9) must be <= block (0.8)",
      'many-problems.yaml:9:5: policies[1]: missing required key "thresholds"',
      'many-problems.yaml:10:22: policies[1].prompts[1]: duplicate prompt "a gun" (same as [0])',
      'many-problems.yaml:12:5: policies[1].threshold: unknown key "threshold" (did you mean "thresholds"?)',
      'many-problems.yaml:13:9: policies[2].id: duplicate id "weapons" (already used by policies[1])',
      "many-problems.yaml:14:14: policies[2].prompts: must be a list",
      "many-problems.yaml:16:14: policies[2].scoring: must be one of similarity, contrastive",
      "many-problems.yaml:17:27: policies[2].thresholds.review: -0.5 is out of range",
      'many-problems.yaml:17:33: policies[2].thresholds.colour: unknown key "colour"',
    ];
    const lines = error?.message.split("\n") ?? [];
    expect(lines).toHaveLength(expected.length);
    expected.forEach((prefix, i) => expect(lines[i]).toMatch(new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`)));
    expect(error?.problems.map((p) => p.file)).toEqual(expected.map(() => "many-problems.yaml"));
  });

  it("reports duplicate YAML keys together with schema problems", () => {
    const problems = problemsOf("version: 1\npolicies: []\npolicies: []\nextra: 1\n");
    expect(problems).toEqual([
      // The data path leads to the first of the duplicate keys.
      "2:1: policies: needs at least one policy",
      '3:1: duplicate key "policies": each key may appear once per mapping',
      '4:1: extra: unknown key "extra"; allowed keys: version, defaults, policies',
    ]);
  });
});

describe("parsePolicies on a valid file", () => {
  it("resolves defaults for every policy", async () => {
    const set = parsePolicies(await readFixture("valid.yaml"), "valid.yaml");
    expect(set.file).toBe("valid.yaml");
    expect(set.defaults).toEqual({ scoring: "similarity", logitScale: 100 });
    expect(set.version).toMatch(/^[0-9a-f]{12}$/);
    expect(set.policies).toEqual([
      {
        id: "weapons",
        description: "Firearms shown prominently",
        prompts: ["a photo of a gun", "a photo of a rifle"],
        negatives: ["a photo of a toy", "a photo of a hair dryer"],
        scoring: "contrastive",
        logitScale: 100,
        thresholds: { review: 0.5, block: 0.8 },
        tiles: false,
      },
      {
        id: "gore",
        description: "",
        prompts: ["a photo of blood", "a photo of a wound"],
        negatives: [],
        scoring: "similarity",
        logitScale: 100,
        thresholds: { review: 0.25 },
        tiles: false,
      },
    ]);
  });

  it("applies built-in defaults when the file has no defaults", () => {
    const set = parsePolicies(onePolicy("id: a\nprompts: [x]\nthresholds: {block: -0.5}\ntiles: true"), "p.yaml");
    expect(set.defaults).toEqual({ scoring: "similarity", logitScale: 100 });
    expect(set.policies[0]).toMatchObject({ scoring: "similarity", logitScale: 100, thresholds: { block: -0.5 }, tiles: true });
  });

  it("freezes the result", async () => {
    const set = parsePolicies(await readFixture("valid.yaml"), "valid.yaml");
    expect(Object.isFrozen(set.policies)).toBe(true);
    expect(Object.isFrozen(set.policies[0]?.prompts)).toBe(true);
  });
});

describe("policyVersion", () => {
  const base = onePolicy("id: a\nprompts: [x, y]\nthresholds: {review: 0.2, block: 0.3}");

  it("does not change with comments, layout, key order or defaults written out", async () => {
    const a = parsePolicies(await readFixture("valid.yaml"), "a.yaml");
    const b = parsePolicies(await readFixture("valid-reformatted.yaml"), "b.yaml");
    expect(b.version).toBe(a.version);
    const commented = `# header\n${base.replace("version: 1", "version: 1   # format")}\n\n# trailer\n`;
    expect(parsePolicies(commented, "p.yaml").version).toBe(parsePolicies(base, "p.yaml").version);
  });

  it.each([
    { change: "a threshold", edit: (s: string) => s.replace("block: 0.3", "block: 0.31") },
    { change: "a prompt", edit: (s: string) => s.replace("[x, y]", "[x, z]") },
    { change: "prompt order", edit: (s: string) => s.replace("[x, y]", "[y, x]") },
    { change: "the id", edit: (s: string) => s.replace("id: a", "id: b") },
    { change: "the scoring mode", edit: (s: string) => s.replace("id: a", "id: a\n    scoring: contrastive\n    negatives: [n]").replace("0.2", "0.25") },
    { change: "logit scale", edit: (s: string) => s.replace("version: 1", "version: 1\ndefaults: {logit_scale: 50}") },
  ])("changes with $change", ({ edit }) => {
    expect(parsePolicies(edit(base), "p.yaml").version).not.toBe(parsePolicies(base, "p.yaml").version);
  });
});

describe("hostile input", () => {
  it("refuses a file over 1 MiB without parsing it", () => {
    const text = `version: 1\n# ${"x".repeat(1024 * 1024)}\n`;
    expect(problemsOf(text)).toEqual([`1:1: the file is ${text.length} bytes; policies files are limited to 1048576 bytes (1 MiB)`]);
  });

  it("refuses an alias bomb", async () => {
    const problems = problemsOf(await readFixture("alias-bomb.yaml"));
    expect(problems).toEqual([expect.stringMatching(/^4:8: too many YAML alias expansions \(limit 100\)/)]);
  });

  it("accepts a few plain aliases", () => {
    const text = `version: 1\npolicies:\n  - {id: a, prompts: &p [x, y], thresholds: {block: 0.5}}\n  - {id: b, prompts: *p, thresholds: {block: 0.6}}\n`;
    expect(parsePolicies(text, "p.yaml").policies[1]?.prompts).toEqual(["x", "y"]);
  });

  it("refuses custom tags", async () => {
    const problems = problemsOf(await readFixture("custom-tag.yaml"));
    expect(problems.filter((p) => p.includes("is not allowed"))).toEqual([
      expect.stringMatching(/^4:\d+: YAML tag !!python\/object\/apply:os.system is not allowed/),
      expect.stringMatching(/^5:\d+: YAML tag !include is not allowed/),
    ]);
  });

  it("refuses absurd nesting without crashing", () => {
    const depth = 100_000;
    const problems = problemsOf(`version: 1\npolicies: ${"[".repeat(depth)}${"]".repeat(depth)}\n`);
    expect(problems.length).toBeGreaterThan(0);
  });
});

describe("loadPolicyFile", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "clipguard-policies-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("loads a valid file and names it by the path given", async () => {
    const set = await loadPolicyFile(fixture("valid.yaml"));
    expect(set.file).toBe(fixture("valid.yaml"));
    expect(set.policies.map((p) => p.id)).toEqual(["weapons", "gore"]);
  });

  it("puts the path in every problem", async () => {
    const error = await loadPolicyFile(fixture("many-problems.yaml")).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(PolicyValidationError);
    expect((error as PolicyValidationError).message.split("\n")[0]).toMatch(new RegExp(`^${fixture("many-problems.yaml")}:4:16: `));
  });

  it.each([
    { name: "a missing file", path: () => join(dir, "nope.yaml"), fragment: "no such file" },
    { name: "a directory", path: () => dir, fragment: "it is not a regular file" },
  ])("refuses $name with CLIPGUARD_E_POLICIES", async ({ path, fragment }) => {
    const error = await loadPolicyFile(path()).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ClipguardError);
    expect((error as ClipguardError).code).toBe("CLIPGUARD_E_POLICIES");
    expect((error as ClipguardError).message).toContain(`cannot read the policies file ${path()}: ${fragment}`);
  });

  it("refuses an oversized file before reading it", async () => {
    const path = join(dir, "big.yaml");
    await writeFile(path, Buffer.alloc(2 * 1024 * 1024, 0x20));
    const error = await loadPolicyFile(path).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(PolicyValidationError);
    expect((error as PolicyValidationError).problems[0]?.message).toBe(
      `the file is ${2 * 1024 * 1024} bytes; policies files are limited to 1048576 bytes (1 MiB)`,
    );
  });
});
