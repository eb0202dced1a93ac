/**
 * `preprocessor_config.json` → {@link PreprocessConfig}: the fields CLIPImageProcessor reads,
 * validated, with its defaults for what a config leaves out.
 */
import { z } from "zod";
import { ClipguardError } from "../shared/errors.js";
import type { PreprocessConfig } from "./types.js";


/** CLIPImageProcessor's defaults, used for fields a config leaves out. */
const OPENAI_CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];
const PIL_BICUBIC = 3;
const PIL_FILTERS: Record<number, string> = { 0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming" };

const positiveInt = z.number().int().positive();
const heightWidth = z.object({ height: positiveInt, width: positiveInt });
const triple = (item: z.ZodNumber) =>
  z.union([item, z.tuple([item, item, item])], { error: "expected a number or an array of 3 numbers (R, G, B)" });

/** The fields CLIPImageProcessor reads. Other keys (processor_class, feature_extractor_type, …) are ignored. */
const preprocessorSchema = z.object({
  size: z
    .union([positiveInt, z.object({ shortest_edge: positiveInt }), heightWidth], {
      error: "expected a positive integer, {shortest_edge} or {height, width}",
    })
    .optional(),
  crop_size: z.union([positiveInt, heightWidth], { error: "expected a positive integer or {height, width}" }).optional(),
  do_resize: z.boolean().optional(),
  do_center_crop: z.boolean().optional(),
  do_rescale: z.boolean().optional(),
  do_normalize: z.boolean().optional(),
  rescale_factor: z.number().positive().optional(),
  image_mean: triple(z.number()).optional(),
  image_std: triple(z.number().positive()).optional(),
  resample: z.number().int().optional(),
});

const modelError = (field: string, message: string) =>
  new ClipguardError("CLIPGUARD_E_MODEL", `preprocessor_config.json: ${field}: ${message}`);

const asTriple = (v: number | [number, number, number]): [number, number, number] => (typeof v === "number" ? [v, v, v] : [...v]);

/**
 * Validates a Hugging Face `preprocessor_config.json` and normalizes it for CLIP preprocessing.
 * Fields left out take CLIPImageProcessor's defaults (224/224, OpenAI CLIP mean and std).
 *
 * Refused, with CLIPGUARD_E_MODEL naming the field, because clipguard would silently compute
 * something else than the model was trained with:
 * - `size: {height, width}` (resize to a fixed size, ignoring the aspect ratio);
 * - `resample` other than 3 (bicubic), the only filter implemented;
 * - `do_center_crop: false`, which makes the output size depend on the image while the image
 *   tower needs a fixed `crop_size` input.
 * `do_rescale: false` is represented as `rescaleFactor: 1`.
 */
export function parsePreprocessorConfig(json: unknown): PreprocessConfig {
  const parsed = preprocessorSchema.safeParse(json);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `${issue.path.length > 0 ? issue.path.join(".") : "(root)"}: ${issue.message}`);
    throw new ClipguardError("CLIPGUARD_E_MODEL", `preprocessor_config.json is invalid: ${lines.join("; ")}`);
  }
  const c = parsed.data;
  let shortestEdge = 224;
  if (typeof c.size === "number") shortestEdge = c.size;
  else if (c.size !== undefined) {
    if (!("shortest_edge" in c.size)) {
      throw modelError("size", "{height, width} (a resize that ignores the aspect ratio) is not supported; use {shortest_edge}");
    }
    shortestEdge = c.size.shortest_edge;
  }
  const crop = typeof c.crop_size === "number" ? { height: c.crop_size, width: c.crop_size } : (c.crop_size ?? { height: 224, width: 224 });
  const resample = c.resample ?? PIL_BICUBIC;
  if (resample !== PIL_BICUBIC) {
    throw modelError("resample", `${resample} (${PIL_FILTERS[resample] ?? "unknown"}) is not supported; clipguard resizes with bicubic (3) only`);
  }
  const doCenterCrop = c.do_center_crop ?? true;
  if (!doCenterCrop) {
    throw modelError("do_center_crop", "false is not supported: the image tower needs a fixed crop_size input");
  }
  return {
    shortestEdge,
    cropHeight: crop.height,
    cropWidth: crop.width,
    doCenterCrop,
    doResize: c.do_resize ?? true,
    doNormalize: c.do_normalize ?? true,
    rescaleFactor: (c.do_rescale ?? true) ? (c.rescale_factor ?? 1 / 255) : 1,
    imageMean: asTriple(c.image_mean ?? OPENAI_CLIP_MEAN),
    imageStd: asTriple(c.image_std ?? OPENAI_CLIP_STD),
  };
}
