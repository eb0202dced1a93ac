import type { Command } from "commander";
import { ClipModel } from "../clip/clip-model.js";
import { compilePolicies, loadPolicyFile } from "../policies/index.js";
import { ImageModerator } from "../policies/image-moderator.js";
import { imageSamplingFromConfig } from "../policies/image-sampling.js";
import { loadConfig } from "../shared/config.js";
import { readImageFile } from "../shared/image-bytes.js";
import { EXIT, reportFatal } from "./cli-errors.js";
import { addModelFlags, resolveModelFlags, type ModelFlags } from "./model-options.js";

/**
 * `clipguard score IMAGE...`: one JSON verdict line per image, in argument order.
 * Exit 0 when every image was scored, 1 when any line is an error, 2 when nothing could run.
 */
async function score(images: string[], flags: ModelFlags): Promise<number> {
  let moderator: ImageModerator;
  let model: ClipModel;
  let maxBytes: number;
  try {
    const config = loadConfig();
    const { modelDir, variant, policiesFile } = resolveModelFlags(flags, config);
    const policySet = await loadPolicyFile(policiesFile);
    model = await ClipModel.load(modelDir, { variant, intraOpThreads: config.CLIPGUARD_ORT_THREADS });
    const compiled = await compilePolicies(policySet, model);
    maxBytes = config.CLIPGUARD_MAX_IMAGE_BYTES;
    moderator = new ImageModerator(model, () => compiled, { maxBytes, maxPixels: config.CLIPGUARD_MAX_PIXELS }, undefined, imageSamplingFromConfig(config));
  } catch (err) {
    return reportFatal(err);
  }
  let errors = 0;
  for (const image of images) {
    let verdict;
    try {
      const bytes = await readImageFile(image, maxBytes);
      verdict = (await moderator.moderate(bytes, { image })).verdict;
    } catch (err) {
      verdict = moderator.errorVerdict(err, { image });
    }
    if (verdict.decision === "error") errors++;
    process.stdout.write(JSON.stringify(verdict) + "\n");
  }
  await model.release();
  return errors > 0 ? EXIT.itemErrors : EXIT.ok;
}

export function registerScoreCommand(program: Command): void {
  addModelFlags(
    program
      .command("score")
      .description("score images against the policies; prints one JSON verdict per image")
      .argument("<images...>", "image files (JPEG, PNG, WebP, GIF, AVIF, TIFF)"),
  ).action(async (images: string[], flags: ModelFlags) => {
    process.exitCode = await score(images, flags);
  });
}
