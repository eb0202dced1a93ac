import sharp, { type Sharp } from "sharp";
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
  type Region,
  type Size,
} from "./preprocess-math.js";
import type { PreprocessConfig } from "./types.js";

export { parsePreprocessorConfig } from "./preprocessor-config.js";

/**
 * Image bytes → the CLIP image tower's input, matching Hugging Face's CLIPImageProcessor:
 * EXIF orientation, first frame (or the frame asked for), RGB (alpha dropped, not composited), bicubic resize of the
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
  return preprocessFrame(bytes, info, config, limits, options, 0);
}

/** The resize target and crop plan of an image of `width`×`height`, refusing sizes over the pixel limit. */
function resizePlan(width: number, height: number, config: PreprocessConfig, limits: DecodeLimits): { resized: Size; plan: CropPlan } {
  const resized = config.doResize ? resizeOutputSize(width, height, config.shortestEdge) : { width, height };
  if (resized.width * resized.height > limits.maxPixels) {
    throw new ClipguardError(
      "CLIPGUARD_E_IMAGE_PIXELS",
      `resizing the ${width}x${height} image to a shortest edge of ${config.shortestEdge} would make it ` +
        `${resized.width}x${resized.height}, over the limit of ${limits.maxPixels} pixels (CLIPGUARD_MAX_PIXELS)`,
    );
  }
  const plan = config.doCenterCrop
    ? centerCropPlan(resized.width, resized.height, config.cropWidth, config.cropHeight)
    : identityCropPlan(resized.width, resized.height);
  return { resized, plan };
}

function normalizeRegion(region: Uint8Array, plan: CropPlan, config: PreprocessConfig): Float32Array {
  return hwcToNormalizedChw(region, plan.copyWidth, plan.copyHeight, { ...plan, srcLeft: 0, srcTop: 0 }, {
    rescaleFactor: config.rescaleFactor,
    doNormalize: config.doNormalize,
    mean: config.imageMean,
    std: config.imageStd,
  });
}

/**
 * Frame `page` of an image already checked by {@link inspectImage}, preprocessed as a whole
 * image. Frame 0 is what {@link preprocessImage} returns.
 *
 * @throws ClipguardError CLIPGUARD_E_IMAGE_PIXELS or _DECODE, as {@link preprocessImage}
 */
export async function preprocessFrame(
  bytes: Uint8Array,
  info: ImageInfo,
  config: PreprocessConfig,
  limits: DecodeLimits,
  options: PreprocessOptions,
  page: number,
): Promise<PreprocessedImage> {
  const { resized, plan } = resizePlan(info.width, info.height, config, limits);
  const fast =
    options.fastShrinkOnLoad === true &&
    info.format === "jpeg" &&
    !info.hasAlpha &&
    Math.min(info.width, info.height) >= 2 * Math.min(resized.width, resized.height);
  const region = await decodeCropRegion(bytes, info, resized, plan, limits, fast, page);
  const pixels = normalizeRegion(region, plan, config);
  return { pixels, width: info.width, height: info.height, format: info.format, outputWidth: plan.outWidth, outputHeight: plan.outHeight };
}

/**
 * `region` of a packed RGB frame (`width`×`height`, from {@link decodeFrameRgb}) preprocessed as
 * if it were a whole image of the region's size: resize of the shortest edge, center crop,
 * normalization. The same pixels saved as a PNG and passed to {@link preprocessImage} give the
 * same values.
 *
 * @throws ClipguardError CLIPGUARD_E_IMAGE_PIXELS when the resize would pass the pixel limit
 */
export async function preprocessRgbRegion(
  rgb: Uint8Array,
  width: number,
  height: number,
  region: Region,
  config: PreprocessConfig,
  limits: DecodeLimits,
): Promise<Float32Array> {
  const tile = cutRgb(rgb, width, height, region);
  const { resized, plan } = resizePlan(region.width, region.height, config, limits);
  const crop = { left: plan.srcLeft, top: plan.srcTop, width: plan.copyWidth, height: plan.copyHeight };
  let pixels: Uint8Array;
  if (resized.width > region.width || resized.height > region.height) {
    pixels = resizeBicubicRegion(tile, region.width, region.height, resized.width, resized.height, crop);
  } else {
    let image = sharp(tile, { raw: { width: region.width, height: region.height, channels: 3 } });
    if (resized.width !== region.width || resized.height !== region.height) {
      image = image.resize(resized.width, resized.height, { kernel: "cubic", fit: "fill" });
    }
    if (crop.width !== resized.width || crop.height !== resized.height) image = image.extract(crop);
    try {
      pixels = await toRgb(image, crop.width, crop.height);
    } catch (err) {
      throw decodeError(err, "the image tile could not be resized");
    }
  }
  return normalizeRegion(pixels, plan, config);
}

/** A rectangle of packed RGB, copied out row by row. */
function cutRgb(rgb: Uint8Array, width: number, height: number, region: Region): Uint8Array {
  if (region.left < 0 || region.top < 0 || region.left + region.width > width || region.top + region.height > height) {
    throw new RangeError(`region ${region.width}x${region.height}+${region.left}+${region.top} is outside the ${width}x${height} image`);
  }
  if (region.width === width && region.height === height) return rgb;
  const out = new Uint8Array(region.width * region.height * 3);
  const rowBytes = region.width * 3;
  for (let y = 0; y < region.height; y++) {
    const from = ((region.top + y) * width + region.left) * 3;
    out.set(rgb.subarray(from, from + rowBytes), y * rowBytes);
  }
  return out;
}

/**
 * Frame `page` as packed 8-bit RGB at full size, EXIF-oriented, alpha dropped: what tiles are cut from.
 *
 * @throws ClipguardError CLIPGUARD_E_IMAGE_DECODE
 */
export async function decodeFrameRgb(bytes: Uint8Array, info: ImageInfo, limits: DecodeLimits, page: number): Promise<Uint8Array> {
  try {
    return await decodeRgb(bytes, info, limits, page);
  } catch (err) {
    throw decodeError(err, "the image could not be decoded");
  }
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
  page: number,
): Promise<Uint8Array> {
  const region = { left: plan.srcLeft, top: plan.srcTop, width: plan.copyWidth, height: plan.copyHeight };
  try {
    if (resized.width > info.width || resized.height > info.height) {
      const full = await decodeRgb(bytes, info, limits, page);
      return resizeBicubicRegion(full, info.width, info.height, resized.width, resized.height, region);
    }
    let image: Sharp;
    if (info.hasAlpha) {
      // sharp premultiplies by alpha around a resize and drops alpha only at the end of its
      // pipeline, which would darken (or zero) colours under transparent pixels. PIL drops the
      // alpha channel first, so decode without it at full size, then resize in a second pipeline.
      const full = await decodeRgb(bytes, info, limits, page);
      image = sharp(full, { raw: { width: info.width, height: info.height, channels: 3 } });
    } else {
      // without pipelineColourspace, libjpeg may decode at reduced scale; sRGB comes at the end
      image = fastShrinkOnLoad ? openImage(bytes, limits, page) : srgbPipeline(bytes, limits, page);
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
 * Frame `page` (the first by default), EXIF-oriented, as 8-bit sRGB. `pipelineColourspace("srgb")` converts grey,
 * CMYK and 16-bit input to 8-bit sRGB before any resize, as PIL's convert("RGB") does; it also
 * turns off JPEG shrink-on-load, which would decode at reduced size with libjpeg's DCT scaling
 * instead of resizing bicubically.
 */
function srgbPipeline(bytes: Uint8Array, limits: DecodeLimits, page = 0): Sharp {
  return openImage(bytes, limits, page).pipelineColourspace("srgb");
}

/** One whole frame as packed RGB, alpha dropped (not composited) as PIL's convert("RGB") does. */
function decodeRgb(bytes: Uint8Array, info: ImageInfo, limits: DecodeLimits, page = 0): Promise<Uint8Array> {
  return toRgb(srgbPipeline(bytes, limits, page), info.width, info.height);
}

async function toRgb(image: Sharp, width: number, height: number): Promise<Uint8Array> {
  const { data, info } = await image.toColourspace("srgb").removeAlpha().raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
  if (info.width !== width || info.height !== height || info.channels !== 3) {
    throw new ClipguardError("CLIPGUARD_E_INTERNAL", `sharp returned ${info.width}x${info.height}x${info.channels} where ${width}x${height}x3 was expected`);
  }
  return data;
}
