import { fileURLToPath } from "node:url";
import path from "node:path";
import fs from "node:fs";

/**
 * The package root, found by walking up from this file to the nearest package.json. Works from
 * `src/` under tsx and from `dist/src/` after the build, so bundled defaults (the demo model,
 * the example policies) resolve wherever clipguard is installed or run from.
 */
function findPackageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, "package.json"))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("clipguard: package.json not found above " + fileURLToPath(import.meta.url));
    dir = parent;
  }
}

export const PACKAGE_ROOT = findPackageRoot();

/** An absolute path inside the installed package. */
export function bundledPath(...segments: string[]): string {
  return path.join(PACKAGE_ROOT, ...segments);
}
