import fs from "node:fs/promises";
import path from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { checkLabelIds, loadLabelledSet } from "../src/eval/labelled-set.js";
import { ClipguardError } from "../src/shared/errors.js";
import { tempDir } from "./support/fixtures.js";

async function labelsError(promise: Promise<unknown>): Promise<ClipguardError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ClipguardError);
  expect((err as ClipguardError).code).toBe("CLIPGUARD_E_LABELS");
  return err as ClipguardError;
}

describe("loadLabelledSet", () => {
  let dir: string;
  const write = async (file: string, text = "x") => {
    await fs.mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await fs.writeFile(path.join(dir, file), text);
  };
  beforeEach(async () => {
    dir = await tempDir("clipguard-labels-");
  });

  it("reads folders: one per policy id plus benign/, recursively, hidden and top-level files skipped", async () => {
    await write("set/red/a.png");
    await write("set/red/nested/b.png");
    await write("set/red/.DS_Store");
    await write("set/benign/c.png");
    await write("set/README.txt");
    const set = await loadLabelledSet(path.join(dir, "set"));
    expect(set.format).toBe("folders");
    expect(set.images.map((i) => [path.relative(dir, i.path), i.policyIds, i.origin])).toEqual([
      ["set/benign/c.png", [], "benign/"],
      ["set/red/a.png", ["red"], "red/"],
      ["set/red/nested/b.png", ["red"], "red/"],
    ]);
  });

  it("reads CSV: optional header, ids split on ; or |, empty for benign, paths relative to the file, quoting", async () => {
    await write(
      "sub/labels.csv",
      ['path,policy_ids', 'a.png,red', 'b.png,red;blue', 'c.png,blue | red', 'd.png,', 'e.png', '"with, comma.png",benign', '/abs/f.png,red', ''].join("\n"),
    );
    const set = await loadLabelledSet(path.join(dir, "sub/labels.csv"));
    expect(set.format).toBe("csv");
    expect(set.images.map((i) => [i.path, i.policyIds])).toEqual([
      [path.join(dir, "sub/a.png"), ["red"]],
      [path.join(dir, "sub/b.png"), ["blue", "red"]],
      [path.join(dir, "sub/c.png"), ["blue", "red"]],
      [path.join(dir, "sub/d.png"), []],
      [path.join(dir, "sub/e.png"), []],
      [path.join(dir, "sub/with, comma.png"), []],
      ["/abs/f.png", ["red"]],
    ]);
    expect(set.images[1]?.origin).toBe(`${path.join(dir, "sub/labels.csv")}:3`);
  });

  it("reads JSONL with an array of ids per line", async () => {
    await write("l.jsonl", '{"path":"a.png","policy_ids":["red"]}\n\n{"path":"b.png","policy_ids":[]}\n');
    const set = await loadLabelledSet(path.join(dir, "l.jsonl"));
    expect(set.format).toBe("jsonl");
    expect(set.images.map((i) => i.policyIds)).toEqual([["red"], []]);
  });

  it.each([
    { name: "too many CSV columns", file: "x.csv", text: "a.png,red\nb.png,red,extra\n", message: /x\.csv:2: expected 2 columns/ },
    { name: "an image listed twice", file: "x.csv", text: "a.png,red\n./a.png,blue\n", message: /listed twice \(first at line 1\)/ },
    { name: "benign mixed with ids", file: "x.csv", text: "a.png,benign;red\n", message: /"benign" cannot be combined/ },
    { name: "unterminated quote", file: "x.csv", text: '"a.png,red\n', message: /not valid CSV/ },
    { name: "JSON syntax", file: "x.jsonl", text: '{"path":"a.png","policy_ids":[]}\n{oops\n', message: /x\.jsonl:2: not valid JSON/ },
    { name: "JSONL ids not an array", file: "x.jsonl", text: '{"path":"a.png","policy_ids":"red"}\n', message: /x\.jsonl:1: expected \{"path"/ },
    { name: "an empty file", file: "x.csv", text: "path,policy_ids\n", message: /list no images/ },
    { name: "another extension", file: "x.txt", text: "a.png,red\n", message: /must be a folder, a \.csv file or a \.jsonl file/ },
  ])("refuses $name", async ({ file, text, message }) => {
    await write(file, text);
    const err = await labelsError(loadLabelledSet(path.join(dir, file)));
    expect(err.message).toMatch(message);
  });

  it("refuses a missing location and a folder without sub-folders", async () => {
    expect((await labelsError(loadLabelledSet(path.join(dir, "nope")))).message).toMatch(/no such file or folder/);
    await write("flat/a.png");
    expect((await labelsError(loadLabelledSet(path.join(dir, "flat")))).message).toMatch(/no sub-folders/);
  });
});

describe("checkLabelIds", () => {
  const set = {
    source: "s",
    format: "csv" as const,
    images: [
      { path: "a", policyIds: ["red"], origin: "l.csv:1" },
      { path: "b", policyIds: ["purple", "red"], origin: "l.csv:2" },
      { path: "c", policyIds: ["teal"], origin: "l.csv:3" },
    ],
  };

  it("names every unknown id with where it was first seen", () => {
    let err: unknown;
    try {
      checkLabelIds(set, ["red", "blue"], "policies.yaml");
    } catch (e) {
      err = e;
    }
    expect((err as ClipguardError).code).toBe("CLIPGUARD_E_LABELS");
    expect((err as ClipguardError).message).toMatch(/"purple" \(l\.csv:2\), "teal" \(l\.csv:3\)/);
    expect((err as ClipguardError).message).toMatch(/policies: red, blue/);
  });

  it("accepts known ids", () => {
    expect(() => checkLabelIds(set, ["red", "purple", "teal"], "p.yaml")).not.toThrow();
  });
});
