/**
 * Writes the benchmark model (CLIP ViT-B/32 architecture, seeded random weights) to
 * .cache/bench-model/vit-b-32/, reusing a complete cached copy, and prints its multiply-accumulate
 * counts next to the published ViT-B/32 figures.
 *
 * Usage: npm run generate:bench-model [-- --smoke] [--force]
 */
import { parseArgs } from "node:util";
import { ensureBenchModel } from "./bench-model-files.js";
import { benchModelMacs, VIT_B_32_PUBLISHED_MACS } from "./bench-model-spec.js";

const { values } = parseArgs({ options: { smoke: { type: "boolean", default: false }, force: { type: "boolean", default: false } } });
const giga = (x: number) => `${(x / 1e9).toFixed(2)} G`;

const model = await ensureBenchModel(values.smoke ? "smoke" : "vit-b-32", {
  force: values.force,
  log: (line) => process.stderr.write(`generate:bench-model: ${line}\n`),
});
const macs = benchModelMacs(model.spec);
process.stdout.write(`${model.generated ? "generated" : "reused (complete cache)"}: ${model.dir}\n`);
process.stdout.write(`multiply-accumulates per image (${model.spec.config.vision.imageSize} px): ${giga(macs.vision)}`);
process.stdout.write(model.spec.id === "vit-b-32" ? ` (published ViT-B/32: ≈${giga(VIT_B_32_PUBLISHED_MACS.vision)})\n` : "\n");
process.stdout.write(`multiply-accumulates per prompt (${model.spec.config.text.contextLength} tokens): ${giga(macs.text)}`);
process.stdout.write(model.spec.id === "vit-b-32" ? ` (published ViT-B/32: ≈${giga(VIT_B_32_PUBLISHED_MACS.text)})\n` : "\n");
if (macs.matchesPublished === false) {
  process.stderr.write("generate:bench-model: the architecture's MAC counts do not match ViT-B/32's published figures\n");
  process.exitCode = 1;
}
