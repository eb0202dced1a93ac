import { DEFAULT_DECODE_LIMITS, inspectImage, type DecodeLimits, type ImageInfo } from "./image-decode.js";
import { planCrops, seenRegion, type CropItem, type SamplingOptions } from "./crop-plan.js";
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
 * Decodes the sampled frames of an image (the first only, for a still image) and, when
 * `withTiles` is set and the image is large enough, cuts its tiles (see `crop-plan.ts`). Each
 * frame is preprocessed exactly as {@link preprocessFrame} does; each tile as a whole image of
 * the tile's size. Frames are decoded one after the other, so one animation does not take every
 * decode thread from concurrent jobs.
 *
 * @throws ClipguardError the image codes of {@link inspectImage} and {@link preprocessFrame}
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
