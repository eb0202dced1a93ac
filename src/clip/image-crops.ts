import { ClipguardError } from "../shared/errors.js";
import { DEFAULT_DECODE_LIMITS, inspectImage, type DecodeLimits, type ImageInfo } from "./image-decode.js";
import { ANIMATED_FORMATS, planCrops, seenRegion, type CropItem, type SamplingOptions } from "./crop-plan.js";
import { decodeFrameRgb, preprocessFrame, preprocessRgbRegion, type PreprocessOptions } from "./preprocess.js";
import type { PreprocessConfig } from "./types.js";

/** Every crop of one image, preprocessed, ready for one `embedPixels(pixels, count)` call. */
export interface PreprocessedCrops {
  info: ImageInfo;
  /** What each crop is, in the order of `pixels`: per sampled frame, the whole frame, then its tiles. */
  items: CropItem[];
  /** `items.length` CHW float32 images of the model's input size, one after the other. */
  pixels: Float32Array;
  /** Frames sampled. */
  frames: number;
  /** Tiles cut, over all frames. */
  tiles: number;
}

/**
 * The decode work of one image, Σ over the decodes it takes, may be at most this many times
 * `maxPixels`. A frame of an animation (GIF, WebP, AVIF) is built from the frames before it, and
 * each sampled frame is decoded on its own, so frame n costs (n + 1) × width × height: judging
 * 8 frames of a 10,000-frame animation decodes ~45,000 frames. With the defaults that is 320
 * megapixels, about 0.7 s of GIF decoding on one core; an animation sampled on 8 frames may then
 * have ~70 megapixels in all (e.g. 300 frames of 640×360).
 */
export const DECODE_WORK_FACTOR = 8;

/** Pixels decoded to get `frames` (each decoded once more for every time it appears in `tiledFrames`). */
export function decodeWork(info: Pick<ImageInfo, "format" | "width" | "height">, frames: readonly number[], tiledFrames: readonly number[] = []): number {
  const perFrame = info.width * info.height;
  const sequential = ANIMATED_FORMATS.has(info.format);
  return [...frames, ...tiledFrames].reduce((sum, frame) => sum + (sequential ? frame + 1 : 1) * perFrame, 0);
}

/**
 * Decodes the sampled frames of an image (the first only, for a still image) and, when
 * `withTiles` is set and the image is large enough, cuts its tiles (see `crop-plan.ts`). Each
 * frame is preprocessed exactly as {@link preprocessFrame} does; each tile as a whole image of
 * the tile's size. Frames are decoded one after the other, so one animation does not take every
 * decode thread from concurrent jobs.
 *
 * @throws ClipguardError the image codes of {@link inspectImage} and {@link preprocessFrame};
 *   CLIPGUARD_E_IMAGE_PIXELS when the decode work passes {@link DECODE_WORK_FACTOR} × maxPixels
 */
export async function preprocessCrops(
  bytes: Uint8Array,
  config: PreprocessConfig,
  sampling: SamplingOptions,
  withTiles: boolean,
  limits: DecodeLimits = DEFAULT_DECODE_LIMITS,
  options: PreprocessOptions = {},
): Promise<PreprocessedCrops> {
  const info = await inspectImage(bytes, limits);
  const plan = planCrops(info, config, sampling, withTiles);
  const work = decodeWork(info, plan.frames, plan.tiledFrames);
  if (work > DECODE_WORK_FACTOR * limits.maxPixels) {
    throw new ClipguardError(
      "CLIPGUARD_E_IMAGE_PIXELS",
      `judging ${plan.frames.length} frames of this ${info.pages}-frame ${info.width}x${info.height} animation decodes ${work} pixels ` +
        `(a frame is built from the frames before it); the limit is ${DECODE_WORK_FACTOR} x ${limits.maxPixels} (CLIPGUARD_MAX_PIXELS)`,
    );
  }
  const parts: Float32Array[] = [];
  const items: CropItem[] = [];
  for (const frame of plan.frames) {
    parts.push((await preprocessFrame(bytes, info, config, limits, options, frame)).pixels);
    items.push({ frame });
    if (!plan.tiledFrames.includes(frame)) continue;
    const rgb = await decodeFrameRgb(bytes, info, limits, frame);
    for (const tile of plan.tiles) {
      parts.push(await preprocessRgbRegion(rgb, info.width, info.height, tile, config, limits));
      items.push({ frame, region: seenRegion(tile, config) });
    }
  }
  const [first] = parts;
  const pixels = parts.length === 1 && first !== undefined ? first : concat(parts);
  return { info, items, pixels, frames: plan.frames.length, tiles: items.length - plan.frames.length };
}

function concat(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
