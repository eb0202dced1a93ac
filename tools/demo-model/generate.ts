/**
 * Writes the demo CLIP model (see tools/demo-model/readme.ts) to models/demo/, or to the directory
 * given as the first argument. Usage: npm run generate:demo-model [-- DIR]
 */
import { stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { writeDemoModel } from "./demo-model-files.js";

const repositoryRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const target = resolve(process.argv[2] ?? join(repositoryRoot, "models", "demo"));

const paths = await writeDemoModel(target);
for (const path of paths) {
  const { size } = await stat(path);
  process.stdout.write(`${path} (${size} bytes)\n`);
}
