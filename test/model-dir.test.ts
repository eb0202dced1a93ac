import { cp, readFile, rm, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClipModel } from "../src/clip/clip-model.js";
import { openModelDirectory } from "../src/clip/model-dir.js";
import { parsePreprocessorConfig } from "../src/clip/preprocess.js";
import type { PreprocessConfig } from "../src/clip/types.js";
import { ClipguardError } from "../src/shared/errors.js";
import { tempDir } from "./support/fixtures.js";
import { CLIP_TOKENIZER_DIR, TINY_IMAGE_SIZE, textModelWithExtraInput, writeTinyClipModel } from "./support/tiny-clip-model.js";

const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** Awaits `work`, expecting a CLIPGUARD_E_MODEL error whose message holds every fragment. */
async function expectModelError(work: Promise<unknown>, ...fragments: string[]): Promise<ClipguardError> {
  const err = await work.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ClipguardError);
  const error = err as ClipguardError;
  expect(error.code).toBe("CLIPGUARD_E_MODEL");
  expect(error.retryable).toBe(false);
  for (const fragment of fragments) expect(error.message).toContain(fragment);
  return error;
}

describe("model directory failures", () => {
  let root: string;
  let base: string;
  let copies = 0;

  /** A fresh copy of the valid tiny model, for one test to break. */
  async function modelCopy(): Promise<string> {
    const dir = path.join(root, `case-${++copies}`);
    await cp(base, dir, { recursive: true });
    return dir;
  }

  beforeAll(async () => {
    root = await tempDir("clipguard-model-dir-");
    base = path.join(root, "base");
    await writeTinyClipModel(base);
  });

  afterAll(async () => {
    if (root !== undefined) await rm(root, { recursive: true, force: true });
  });

  it("loads the valid base model (so that each failure below has one cause)", async () => {
    const model = await ClipModel.load(base);
    await model.release();
  });

  it("refuses a directory that does not exist", async () => {
    const missing = path.join(root, "no-such-model");
    await expectModelError(ClipModel.load(missing), missing, "does not exist");
  });

  it("refuses a path that is a file, not a directory", async () => {
    const file = path.join(base, "config.json");
    await expectModelError(openModelDirectory(file), file, "is not a directory");
  });

  it("refuses a directory without onnx/vision_model.onnx", async () => {
    const dir = await modelCopy();
    await unlink(path.join(dir, "onnx", "vision_model.onnx"));
    await expectModelError(ClipModel.load(dir), path.join(dir, "onnx", "vision_model.onnx"), "is missing", "image tower", "pixel_values");
  });

  it("refuses a directory without onnx/text_model.onnx", async () => {
    const dir = await modelCopy();
    await unlink(path.join(dir, "onnx", "text_model.onnx"));
    await expectModelError(ClipModel.load(dir), path.join(dir, "onnx", "text_model.onnx"), "is missing", "text tower", "input_ids");
  });

  it("refuses a variant whose files are not there", async () => {
    await expectModelError(ClipModel.load(base, { variant: "fp16" }), "vision_model_fp16.onnx", "is missing", 'variant "fp16"');
  });

  it.each(["../x", "fp16/../../etc", "", "FP16", "q 8"])("refuses the invalid variant name %j", async (variant) => {
    await expectModelError(ClipModel.load(base, { variant }), `invalid variant ${JSON.stringify(variant)}`, "letters and digits only");
  });

  it("refuses a config.json that is not JSON", async () => {
    const dir = await modelCopy();
    await writeFile(path.join(dir, "config.json"), "{ model_type: clip");
    await expectModelError(ClipModel.load(dir), path.join(dir, "config.json"), "is not valid JSON");
  });

  it("refuses a config.json that is JSON but not an object", async () => {
    const dir = await modelCopy();
    await writeFile(path.join(dir, "config.json"), "[1, 2, 3]");
    await expectModelError(ClipModel.load(dir), "config.json", "must hold a JSON object");
  });

  it("refuses a directory without tokenizer.json", async () => {
    const dir = await modelCopy();
    await unlink(path.join(dir, "tokenizer.json"));
    await expectModelError(ClipModel.load(dir), path.join(dir, "tokenizer.json"), "cannot read", "ENOENT", "Hugging Face ONNX layout");
  });

  it("refuses a tokenizer.json that @huggingface/tokenizers cannot load", async () => {
    const dir = await modelCopy();
    await writeFile(path.join(dir, "tokenizer.json"), JSON.stringify({ version: "1.0", model: { type: "NoSuchModel" } }));
    await expectModelError(ClipModel.load(dir), path.join(dir, "tokenizer.json"), "not a tokenizer that @huggingface/tokenizers can load");
  });

  it("refuses a tokenizer.json whose vocabulary lacks the end-of-text token", async () => {
    const dir = await modelCopy();
    const tokenizer = JSON.parse(await readFile(path.join(dir, "tokenizer.json"), "utf8")) as { model: { vocab: Record<string, number> } };
    delete tokenizer.model.vocab["<|endoftext|>"];
    await writeFile(path.join(dir, "tokenizer.json"), JSON.stringify({ ...tokenizer, added_tokens: [] }));
    await expectModelError(ClipModel.load(dir), "tokenizer.json", '"<|endoftext|>"', "not in the vocabulary");
  });

  it("refuses a vision graph without an image_embeds output", async () => {
    const dir = await modelCopy();
    // a common mistake: the towers swapped, so the "vision" graph answers with text_embeds
    await cp(path.join(dir, "onnx", "text_model.onnx"), path.join(dir, "onnx", "vision_model.onnx"));
    await expectModelError(ClipModel.load(dir), path.join(dir, "onnx", "vision_model.onnx"), 'output named "image_embeds"', '"text_embeds"');
  });

  it("refuses a text graph with an input other than input_ids and attention_mask", async () => {
    const dir = await modelCopy();
    await writeFile(path.join(dir, "onnx", "text_model.onnx"), textModelWithExtraInput());
    await expectModelError(ClipModel.load(dir), path.join(dir, "onnx", "text_model.onnx"), "unexpected inputs position_ids", "input_ids");
  });

  it("refuses a file that is not an ONNX model", async () => {
    const dir = await modelCopy();
    await writeFile(path.join(dir, "onnx", "text_model.onnx"), "version https://git-lfs.github.com/spec/v1\n");
    await expectModelError(ClipModel.load(dir), path.join(dir, "onnx", "text_model.onnx"), "ONNX Runtime cannot load it");
  });

  it("refuses a preprocessor_config.json whose crop size differs from the image tower's input", async () => {
    const dir = await modelCopy();
    const file = path.join(dir, "preprocessor_config.json");
    const config = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
    await writeFile(file, JSON.stringify({ ...config, crop_size: { height: 224, width: 224 } }));
    await expectModelError(ClipModel.load(dir), "vision_model.onnx", `${TINY_IMAGE_SIZE}x${TINY_IMAGE_SIZE}`, "crops to 224x224");
  });

  it.each([
    ["size", { size: { height: 224, width: 224 } }, "{height, width}"],
    ["resample", { resample: 2 }, "bilinear"],
    ["do_center_crop", { do_center_crop: false }, "fixed crop_size"],
    ["image_std", { image_std: [0.2, 0.3] }, "3 numbers"],
  ])("refuses a preprocessor_config.json with an unsupported %s", async (field, change, expected) => {
    const dir = await modelCopy();
    const file = path.join(dir, "preprocessor_config.json");
    const config = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
    await writeFile(file, JSON.stringify({ ...config, ...change }));
    await expectModelError(ClipModel.load(dir), "preprocessor_config.json", field, expected);
  });
});

describe("preprocessor_config.json fields", () => {
  it("are read from a model directory", async () => {
    const root = await tempDir("clipguard-model-dir-");
    try {
      const { dir } = await writeTinyClipModel(path.join(root, "tiny"));
      const model = await ClipModel.load(dir);
      await model.release();
      expect(model.preprocess).toEqual<PreprocessConfig>({
        shortestEdge: TINY_IMAGE_SIZE,
        cropHeight: TINY_IMAGE_SIZE,
        cropWidth: TINY_IMAGE_SIZE,
        doCenterCrop: true,
        doResize: true,
        doNormalize: true,
        rescaleFactor: 0.00392156862745098,
        imageMean: CLIP_MEAN,
        imageStd: CLIP_STD,
      });
      expect(model.directory.preprocessorConfigPath).toBe(path.join(dir, "preprocessor_config.json"));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("of OpenAI CLIP ViT-B/32 give 224, center crop and the CLIP mean and std", async () => {
    const json = JSON.parse(await readFile(path.join(CLIP_TOKENIZER_DIR, "preprocessor_config.json"), "utf8")) as unknown;
    expect(parsePreprocessorConfig(json)).toEqual<PreprocessConfig>({
      shortestEdge: 224,
      cropHeight: 224,
      cropWidth: 224,
      doCenterCrop: true,
      doResize: true,
      doNormalize: true,
      rescaleFactor: 1 / 255,
      imageMean: CLIP_MEAN,
      imageStd: CLIP_STD,
    });
  });

  it("of the demo model match CLIP's", async () => {
    const directory = await openModelDirectory("models/demo");
    expect(parsePreprocessorConfig(directory.preprocessorConfig)).toMatchObject({ shortestEdge: 224, cropHeight: 224, cropWidth: 224 });
    expect(directory.contextLength).toBe(77);
    expect(directory.name).toBe("clipguard/demo-colour-clip");
  });

  it("in their other spellings: plain numbers, one mean for all channels, no rescale, no normalize", () => {
    const parsed = parsePreprocessorConfig({
      size: 256,
      crop_size: 240,
      image_mean: 0.5,
      image_std: [0.2, 0.3, 0.4],
      do_rescale: false,
      do_normalize: false,
      do_resize: false,
      processor_class: "CLIPProcessor",
    });
    expect(parsed).toEqual<PreprocessConfig>({
      shortestEdge: 256,
      cropHeight: 240,
      cropWidth: 240,
      doCenterCrop: true,
      doResize: false,
      doNormalize: false,
      rescaleFactor: 1,
      imageMean: [0.5, 0.5, 0.5],
      imageStd: [0.2, 0.3, 0.4],
    });
  });

  it("left out take CLIPImageProcessor's defaults", () => {
    expect(parsePreprocessorConfig({})).toEqual<PreprocessConfig>({
      shortestEdge: 224,
      cropHeight: 224,
      cropWidth: 224,
      doCenterCrop: true,
      doResize: true,
      doNormalize: true,
      rescaleFactor: 1 / 255,
      imageMean: CLIP_MEAN,
      imageStd: CLIP_STD,
    });
  });
});
