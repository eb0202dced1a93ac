import fs from "node:fs";
import { describe, expect, it } from "vitest";
import { CONFIG_VARIABLES } from "../src/shared/config.js";
import { ERROR_CODES } from "../src/shared/errors.js";

const readme = fs.readFileSync("README.md", "utf8");
const tableRows = (heading: string): string[] => {
  const section = readme.split(`## ${heading}\n`)[1]?.split("\n## ")[0] ?? "";
  return section.split("\n").filter((l) => l.startsWith("| `"));
};

describe("README stays true", () => {
  it("lists every error code in the error table, with its retryable flag", () => {
    const rows = tableRows("Error codes");
    for (const [code, { retryable }] of Object.entries(ERROR_CODES)) {
      const row = rows.find((r) => r.startsWith(`| \`${code}\` |`));
      expect(row, `${code} missing from the README's error table`).toBeDefined();
      expect(row).toContain(retryable ? "| yes |" : "| no |");
    }
    expect(rows).toHaveLength(Object.keys(ERROR_CODES).length);
  });

  it("documents every environment variable in the configuration table", () => {
    const rows = tableRows("Configuration");
    for (const name of CONFIG_VARIABLES) {
      expect(rows.some((r) => r.startsWith(`| \`${name}\` |`)), `${name} missing from the README`).toBe(true);
    }
    expect(rows).toHaveLength(CONFIG_VARIABLES.length);
  });

  it("starts with a Quick start of exactly two commands", () => {
    const quick = readme.split("## Quick start\n")[1]?.split("```")[1] ?? "";
    const commands = quick.split("\n").filter((l) => l.trim().length > 0 && !l.startsWith("sh"));
    expect(commands).toHaveLength(2);
    expect(commands[0]).toMatch(/^npm ci && npm run demo/);
    expect(commands[1]).toMatch(/^npm test/);
  });
});
