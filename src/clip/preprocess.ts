import sharp, { type Sharp } from "sharp";
import { z } from "zod";
import { ClipguardError } from "../shared/errors.js";
import { DEFAULT_DECODE_LIMITS, decodeError, inspectImage, openImage, type DecodeLimits, type ImageInfo } from "./image-decode.js";
import type { ImageFormat } from "./image-format.js";
import {
  centerCropPlan,
  hwcToNormalizedChw,
  identityCropPlan,
  resizeBicubicRegion,
  resizeOutputSize,
  type CropPlan,
  type Size,
} from "./preprocess-math.js";
import type { PreprocessConfig } from "./types.js";

/**
 * Image bytes → the CLIP image tower's input, matching Hugging Face's CLIPImageProcessor:
 * EXIF orientation, first frame, RGB (alpha dropped, not composited), bicubic resize of the
 * shortest edge, center crop (zero padding when too small), rescale, normalize, CHW float32.
 *
 * One sharp pipeline decodes, resizes and cuts out the crop region as raw 8-bit RGB; the
 * arithmetic after that is in `preprocess-math.ts`, and its rescale/normalize matches numpy's
 * float32 results bit for bit.
 *
 * Known differences from transformers + PIL:
 * - Shrinking runs in libvips: its Catmull-Rom (`kernel: "cubic"`) is PIL's BICUBIC (a = -0.5)
 *   with the same support widening, but libvips box-shrinks first when shrinking by 4× or more
 *   and rounds differently. Measured against PIL 9.4 on photos: 77–90 % of values identical, the
 *   rest off by at most 2–6 levels out of 255 (mean |Δ| ≈ 0.003 after normalization).
 * - Enlarging (shortest edge under `shortestEdge`) is PIL's algorithm reproduced exactly.
 * - Embedded ICC profiles are ignored, as PIL does; CMYK goes through libvips's CMYK profile
 *   (PIL's CMYK → RGB is a naive formula); 16-bit input keeps its high byte.
 */

export interface PreprocessedImage {
  /** CHW float32, R, G, B planes of `outputHeight` × `outputWidth` (the crop size). */
  pixels: Float32Array;
  /** Source width after EXIF orientation. */
  width: number;
  /** Source height after EXIF orientation. */
  height: number;
  format: ImageFormat;
  /** Size of each plane of `pixels`: the crop size, or the resized size when `doCenterCrop` is false. */
  outputWidth: number;
  outputHeight: number;
}

/** Trade-offs a caller may choose. */
export interface PreprocessOptions {
  /**
   * Let libjpeg decode large JPEGs at 1/2, 1/4 or 1/8 scale (shrink-on-load) before the bicubic
   * resize, which makes decoding large photos much cheaper (`npm run bench` reports the 12 MP
   * figures). The embedding stays within 1e-3 cosine of the exact path (checked in
   * test/preprocess-fast-path.test.ts). Only JPEGs without alpha whose shortest edge is at least
   * twice the target take this path.
   * @default false
   */
  fastShrinkOnLoad?: boolean;
}

/**
 * Decodes and preprocesses one image under `limits`.
 *
 * @throws ClipguardError CLIPGUARD_E_IMAGE_EMPTY, _TOO_LARGE, _FORMAT, _PIXELS or _DECODE (see
 *   {@link inspectImage}); _PIXELS also when resizing would make the image larger than
 *   `maxPixels` (an extreme aspect ratio, e.g. 1×100000)
 */
export async function preprocessImage(
  bytes: Buffer | Uint8Array,
  config: PreprocessConfig,
  limits: DecodeLimits = DEFAULT_DECODE_LIMITS,
  options: PreprocessOptions = {},
): Promise<PreprocessedImage> {
  const info = await inspectImage(bytes, limits);
  const resized = config.doResize ? resizeOutputSize(info.width, info.height, config.shortestEdge) : { width: info.width, height: info.height };
  if (resized.width * resized.height > limits.maxPixels) {
    throw new ClipguardError(
      "CLIPGUARD_E_IMAGE_PIXELS",
      `resizing the ${info.width}x${info.height} image to a shortest edge of ${config.shortestEdge} would make it ` +
        `${resized.width}x${resized.height}, over the limit of ${limits.maxPixels} pixels (CLIPGUARD_MAX_PIXELS)`,
    );
  }
  const plan = config.doCenterCrop
    ? centerCropPlan(resized.width, resized.height, config.cropWidth, config.cropHeight)
    : identityCropPlan(resized.width, resized.height);
  const fast =
    options.fastShrinkOnLoad === true &&
    info.format === "jpeg" &&
    !info.hasAlpha &&
    Math.min(info.width, info.height) >= 2 * Math.min(resized.width, resized.height);
  const region = await decodeCropRegion(bytes, info, resized, plan, limits, fast);
  const pixels = hwcToNormalizedChw(region, plan.copyWidth, plan.copyHeight, { ...plan, srcLeft: 0, srcTop: 0 }, {
    rescaleFactor: config.rescaleFactor,
    doNormalize: config.doNormalize,
    mean: config.imageMean,
    std: config.imageStd,
  });
  return { pixels, width: info.width, height: info.height, format: info.format, outputWidth: plan.outWidth, outputHeight: plan.outHeight };
}

/**
 * Raw 8-bit RGB of the crop region (`plan.copyWidth` × `plan.copyHeight` at `plan.srcLeft/Top`)
 * of the image resized to `resized`.
 *
 * Shrinking (the common case) runs in libvips; extracting after the resize inside libvips keeps
 * memory at the crop size even when the resized image would be long and thin. Enlarging (images
 * whose shortest edge is under `shortestEdge`) uses {@link resizeBicubicRegion}, PIL's algorithm
 * bit for bit: libvips samples enlargements a quarter pixel away from PIL, which changes edges by
 * up to half the value range. Such images are small, so the JS resize is cheap.
 */
async function decodeCropRegion(
  bytes: Uint8Array,
  info: ImageInfo,
  resized: Size,
  plan: CropPlan,
  limits: DecodeLimits,
  fastShrinkOnLoad: boolean,
): Promise<Uint8Array> {
  const region = { left: plan.srcLeft, top: plan.srcTop, width: plan.copyWidth, height: plan.copyHeight };
  try {
    if (resized.width > info.width || resized.height > info.height) {
      const full = await decodeRgb(bytes, info, limits);
      return resizeBicubicRegion(full, info.width, info.height, resized.width, resized.height, region);
    }
    let image: Sharp;
    if (info.hasAlpha) {
      // sharp premultiplies by alpha around a resize and drops alpha only at the end of its
      // pipeline, which would darken (or zero) colours under transparent pixels. PIL drops the
      // alpha channel first, so decode without it at full size, then resize in a second pipeline.
      const full = await decodeRgb(bytes, info, limits);
      image = sharp(full, { raw: { width: info.width, height: info.height, channels: 3 } });
    } else {
      // without pipelineColourspace, libjpeg may decode at reduced scale; sRGB comes at the end
      image = fastShrinkOnLoad ? openImage(bytes, limits) : srgbPipeline(bytes, limits);
    }
    if (resized.width !== info.width || resized.height !== info.height) {
      image = image.resize(resized.width, resized.height, { kernel: "cubic", fit: "fill", fastShrinkOnLoad });
    }
    if (region.width !== resized.width || region.height !== resized.height) image = image.extract(region);
    return await toRgb(image, region.width, region.height);
  } catch (err) {
    throw decodeError(err, "the image could not be decoded");
  }
}

/**
 * The first frame, EXIF-oriented, as 8-bit sRGB. `pipelineColourspace("srgb")` converts grey,
 * CMYK and 16-bit input to 8-bit sRGB before any resize, as PIL's convert("RGB") does; it also
 * turns off JPEG shrink-on-load, which would decode at reduced size with libjpeg's DCT scaling
 * instead of resizing bicubically.
 */
function srgbPipeline(bytes: Uint8Array, limits: DecodeLimits): Sharp {
  return openImage(bytes, limits).pipelineColourspace("srgb");
}

/** The whole first frame as packed RGB, alpha dropped (not composited) as PIL's convert("RGB") does. */
function decodeRgb(bytes: Uint8Array, info: ImageInfo, limits: DecodeLimits): Promise<Uint8Array> {
  return toRgb(srgbPipeline(bytes, limits), info.width, info.height);
}

async function toRgb(image: Sharp, width: number, height: number): Promise<Uint8Array> {
  const { data, info } = await image.toColourspace("srgb").removeAlpha().raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  if (info.width !== width || info.height !== height || info.channels !== 3) {
    throw new ClipguardError("CLIPGUARD_E_INTERNAL", `sharp returned ${info.width}x${info.height}x${info.channels} where ${width}x${height}x3 was expected`);
  }
  return data;
}

// ---------------------------------------------------------------------------------------------
// preprocessor_config.json

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
