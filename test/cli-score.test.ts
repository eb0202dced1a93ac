import { spawnSync } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { Verdict } from "../src/shared/verdict.js";
import { BLUE, RED, solidPng, tempDir } from "./support/fixtures.js";
import { CLI } from "./support/worker-process.js";

function clipguard(args: string[], env: Record<string, string> = {}) {
  const result = spawnSync(process.execPath, [CLI, ...args], {
    encoding: "utf8",
    env: { ...process.env, CLIPGUARD_MODEL_DIR: "", CLIPGUARD_POLICIES: "", ...env },
    timeout: 60_000,
  });
  const lines = result.stdout.split("\n").filter((l) => l.length > 0);
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, lines };
}

describe("clipguard score", () => {
  let dir: string;
  let red: string;
  let blue: string;

  beforeAll(async () => {
    dir = await tempDir();
    red = path.join(dir, "red.png");
    blue = path.join(dir, "blue.png");
    await fs.writeFile(red, await solidPng(RED, 300, 200));
    await fs.writeFile(blue, await solidPng(BLUE, 200, 300));
    await fs.writeFile(path.join(dir, "fake.png"), "<svg xmlns='http://www.w3.org/2000/svg'/>");
  });

  it("prints one verdict per image in argument order on the bundled defaults, exit 0", () => {
    const { status, lines, stderr } = clipguard(["score", red, blue]);
    expect(stderr).toBe("");
    expect(status).toBe(0);
    const verdicts = lines.map((l) => JSON.parse(l) as Verdict);
    expect(verdicts.map((v) => v.image)).toEqual([red, blue]);
    const [r, b] = verdicts;
    expect(Object.keys(r!)).toEqual(["image", "decision", "policies", "imageSha256", "model", "policyVersion"]);
    expect(r!.decision).toBe("block");
    expect(r!.policies.find((p) => p.id === "mostly_red")).toMatchObject({ decision: "block", prompt: expect.stringMatching(/red|crimson/) });
    expect(b!.policies.find((p) => p.id === "mostly_red")?.decision).toBe("allow");
    expect(r!.imageSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(r!.model).toEqual({ name: "clipguard/demo-colour-clip", fingerprint: expect.stringMatching(/^[0-9a-f]{16}$/) });
  });

  it("scores the bundled example images", async () => {
    const images = (await fs.readdir("examples/images")).map((f) => path.join("examples/images", f));
    const { status, lines } = clipguard(["score", ...images]);
    expect(status).toBe(0);
    const decisions = Object.fromEntries(lines.map((l) => JSON.parse(l) as Verdict).map((v) => [path.basename(v.image!), v.decision]));
    expect(decisions).toMatchObject({ "red-poster.png": "block", "green-field.jpg": "block", "chelsea.png": "allow", "rocket.jpg": "review" });
  });

  it("writes error lines for unreadable, refused and corrupt images, scores the rest, exit 1", () => {
    const { status, lines } = clipguard(["score", path.join(dir, "missing.png"), path.join(dir, "fake.png"), "../shared/images/truncated.jpg", red]);
    expect(status).toBe(1);
    const verdicts = lines.map((l) => JSON.parse(l) as Verdict);
    expect(verdicts.map((v) => v.error?.code ?? v.decision)).toEqual([
      "CLIPGUARD_E_IMAGE_READ",
      "CLIPGUARD_E_IMAGE_FORMAT",
      "CLIPGUARD_E_IMAGE_DECODE",
      "block",
    ]);
    for (const v of verdicts.slice(0, 3)) {
      expect(v.decision).toBe("error");
      expect(v.policies).toEqual([]);
      expect(v.error!.message.length).toBeGreaterThan(10);
    }
  });

  it("refuses an image over the byte limit before reading it", () => {
    const { status, lines } = clipguard(["score", red], { CLIPGUARD_MAX_IMAGE_BYTES: "100" });
    expect(status).toBe(1);
    expect((JSON.parse(lines[0]!) as Verdict).error?.code).toBe("CLIPGUARD_E_IMAGE_TOO_LARGE");
  });

  it("refuses an image over the pixel limit", () => {
    const { status, lines } = clipguard(["score", red], { CLIPGUARD_MAX_PIXELS: "1000" });
    expect(status).toBe(1);
    expect((JSON.parse(lines[0]!) as Verdict).error?.code).toBe("CLIPGUARD_E_IMAGE_PIXELS");
  });

  it.each([
    ["a missing model directory", ["score", "--model", "/nonexistent", "x.png"], {}, /model directory .*nonexistent.* does not exist/],
    ["a missing variant", ["score", "--variant", "fp16", "x.png"], {}, /vision_model_fp16\.onnx is missing/],
    ["a missing policies file", ["score", "--policies", "/nonexistent.yaml", "x.png"], {}, /cannot read the policies file/],
    ["an invalid environment", ["score", "x.png"], { CLIPGUARD_MAX_PIXELS: "lots" }, /CLIPGUARD_MAX_PIXELS/],
    ["no images", ["score"], {}, /missing required argument/],
    ["an unknown flag", ["score", "--colour", "x.png"], {}, /unknown option/],
  ])("exits 2 with a one-line message for %s", (_name, args, env, message) => {
    const { status, stdout, stderr } = clipguard(args as string[], env as Record<string, string>);
    expect(status).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toMatch(message);
    expect(stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it("exits 2 with every problem for an invalid policies file", async () => {
    const bad = path.join(dir, "bad.yaml");
    await fs.writeFile(bad, "version: 1\npolicies:\n  - id: Bad Id\n    prompts: []\n    thresholds: { review: 0.9, block: 0.1 }\n");
    const { status, stderr } = clipguard(["score", "--policies", bad, red]);
    expect(status).toBe(2);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toContain("bad.yaml:3:");
    expect(stderr).toContain("bad.yaml:4:");
    expect(stderr).toContain("bad.yaml:5:");
  });
});

describe("clipguard policies check", () => {
  it("summarizes a valid file, exit 0", () => {
    const { status, stdout } = clipguard(["policies", "check", "examples/policies.yaml"]);
    expect(status).toBe(0);
    expect(stdout).toMatch(/3 policies, version [0-9a-f]{12}/);
    expect(stdout).toContain("green_vs_blue: contrastive, 2 prompts, 2 negatives, review >= 0.5, block >= 0.9");
  });

  it("embeds every prompt with --model", () => {
    const { status, stdout } = clipguard(["policies", "check", "examples/policies.yaml", "--model", "models/demo"]);
    expect(status).toBe(0);
    expect(stdout).toMatch(/all prompts embedded with clipguard\/demo-colour-clip/);
  });

  it("prints one problem per line with file:line:col, exit 2", async () => {
    const dir = await tempDir();
    const bad = path.join(dir, "bad.yaml");
    await fs.writeFile(bad, "version: 1\npolicies:\n  - id: a\n    prompts: [x]\n    thresholds: { review: 0.9, block: 0.1 }\n  - id: a\n    prompts: [y]\n    thresold: 1\n");
    const { status, stderr } = clipguard(["policies", "check", bad]);
    expect(status).toBe(2);
    const problems = stderr.trim().split("\n");
    expect(problems.length).toBeGreaterThanOrEqual(3);
    for (const p of problems) expect(p).toMatch(/bad\.yaml:\d+:\d+: /);
    expect(stderr).toMatch(/review \(0\.9\) must be <= block \(0\.1\)/);
    expect(stderr).toMatch(/duplicate/i);
    expect(stderr).toMatch(/thresold/);
  });
});

describe("clipguard (no command)", () => {
  it("--help exits 0 and lists the commands", () => {
    const { status, stdout } = clipguard(["--help"]);
    expect(status).toBe(0);
    for (const command of ["score", "policies", "worker"]) expect(stdout).toContain(command);
  });

  it("an unknown command exits 2", () => {
    expect(clipguard(["frobnicate"]).status).toBe(2);
  });
});
