/**
 * Which crops of one image go to the image tower: the sampled frames of an animation and the
 * tiles of a large canvas. Plain functions over numbers, no I/O; `image-crops.ts` cuts and
 * preprocesses what these plan.
 */
import type { Region } from "./preprocess-math.js";
import type { PreprocessConfig } from "./types.js";

/** `[x, y, width, height]` in source pixels (after EXIF orientation), as verdicts report it. */
export type RegionBox = [number, number, number, number];

/** How frames and tiles are sampled; part of the image-embedding cache key. */
export interface SamplingOptions {
  /**
   * Frames scored per animation (GIF, WebP, AVIF), evenly spaced, the first and last always
   * among them; 1 scores the first frame only.
   * @default 8 (CLIPGUARD_FRAMES_MAX)
   */
  framesMax: number;
  /**
   * Tiling applies when the long side is more than this many times the model's input size.
   * @default 2 (CLIPGUARD_TILES_RATIO)
   */
  tilesRatio: number;
  /**
   * Most tiles per image, over all its frames; below 2 turns tiling off.
   * @default 9 (CLIPGUARD_TILES_MAX)
   */
  tilesMax: number;
}

export const DEFAULT_SAMPLING: Readonly<SamplingOptions> = Object.freeze({ framesMax: 8, tilesRatio: 2, tilesMax: 9 });

/** Fraction of a tile's side shared with its neighbour, so that an object on a seam is whole in one tile. */
export const TILE_OVERLAP = 0.25;

/** Formats that are animations: their pages are frames in time. TIFF pages are separate documents. */
export const ANIMATED_FORMATS: ReadonlySet<string> = new Set(["gif", "webp", "avif"]);

/**
 * `count` frame indices out of `pages`, evenly spaced and rounded, always the first and the last:
 * e.g. 8 out of 10 → 0, 1, 3, 4, 5, 6, 8, 9. Strictly increasing (the step is at least 1).
 */
export function sampleFrameIndices(pages: number, max: number): number[] {
  const count = Math.max(1, Math.min(pages, Math.floor(max)));
  if (count === 1) return [0];
  return Array.from({ length: count }, (_, i) => Math.round((i * (pages - 1)) / (count - 1)));
}

/** Tiles of side `tile` (overlapping by TILE_OVERLAP) needed to cover `length`. */
function tilesAlong(length: number, tile: number): number {
  if (length <= tile) return 1;
  // the epsilon keeps an exact fit from counting one tile more through float rounding
  return Math.ceil((length - tile) / (tile * (1 - TILE_OVERLAP)) - 1e-9) + 1;
}

/** `count` offsets of a `tile`-long window spread evenly over `length`, first at 0, last at the end. */
function offsetsAlong(length: number, tile: number, count: number): number[] {
  if (count <= 1) return [Math.max(0, Math.floor((length - tile) / 2))];
  return Array.from({ length: count }, (_, i) => Math.round((i * (length - tile)) / (count - 1)));
}

/** The model's input size, the side tiling is measured against. */
export function modelInputSize(config: Pick<PreprocessConfig, "cropWidth" | "cropHeight">): number {
  return Math.max(config.cropWidth, config.cropHeight);
}

/**
 * The tiles of a `width`×`height` image, or none when its long side is at most `ratio` × the
 * model's input size or `maxTiles` < 2.
 *
 * Each tile is center-cropped like a whole image, so tiles are squares wherever the short side
 * allows: the smallest square side (at least the input size, at most the short side) whose
 * grid, with neighbours overlapping by a quarter, needs at most `maxTiles` tiles. The grid's shape
 * follows the aspect ratio: 3×3 for a large square, 7×1 for a 2000×400 banner. Only when even
 * squares as tall as the short side need more than `maxTiles` (an aspect ratio beyond about 7:1
 * with the default 9) are the tiles widened along the long axis, one row of `maxTiles`; the center
 * crop then sees the middle of each.
 */
export function tileGrid(width: number, height: number, inputSize: number, ratio: number, maxTiles: number): Region[] {
  const long = Math.max(width, height);
  const short = Math.min(width, height);
  if (maxTiles < 2 || long <= ratio * inputSize) return [];
  const fits = (tile: number) => tilesAlong(width, tile) * tilesAlong(height, tile) <= maxTiles;
  let side = -1;
  for (let t = Math.min(short, inputSize); t <= short; t++) {
    if (fits(t)) {
      side = t;
      break;
    }
  }
  let tileW: number;
  let tileH: number;
  if (side > 0) {
    tileW = side;
    tileH = side;
  } else {
    // one row (or column) of maxTiles tiles spanning the short side
    const along = Math.ceil(long / (1 + (maxTiles - 1) * (1 - TILE_OVERLAP)));
    [tileW, tileH] = width >= height ? [along, short] : [short, along];
  }
  const xs = offsetsAlong(width, tileW, tilesAlong(width, tileW));
  const ys = offsetsAlong(height, tileH, tilesAlong(height, tileH));
  const tiles: Region[] = [];
  for (const top of ys) for (const left of xs) tiles.push({ left, top, width: Math.min(tileW, width), height: Math.min(tileH, height) });
  return tiles.slice(0, maxTiles);
}

/**
 * The part of `tile` the image tower sees after the resize of the shortest edge and the center
 * crop, in source pixels: the whole tile when it is square and the crop is the resize target.
 */
export function seenRegion(tile: Region, config: Pick<PreprocessConfig, "shortestEdge" | "cropWidth" | "cropHeight">): RegionBox {
  const scale = Math.min(tile.width, tile.height) / config.shortestEdge;
  const w = Math.min(tile.width, Math.round(config.cropWidth * scale));
  const h = Math.min(tile.height, Math.round(config.cropHeight * scale));
  return [tile.left + Math.floor((tile.width - w) / 2), tile.top + Math.floor((tile.height - h) / 2), w, h];
}

/** One input of the image tower: a whole frame, or a tile of one. */
export interface CropItem {
  /** Frame index in the source (0 for a still image). */
  frame: number;
  /** The tile, when this is one: the region the tower saw, in source pixels. */
  region?: RegionBox;
}

/** What to cut from one image. */
export interface CropPlanResult {
  /** Sampled frame indices, increasing. */
  frames: number[];
  /** Frames that are also tiled (a subset of `frames`), and the tiles of each. */
  tiledFrames: number[];
  tiles: Region[];
}

/**
 * Frames to sample and tiles to cut for an image of `pages` frames of `width`×`height`.
 * `withTiles` is false when no policy asks for tiles. The tile budget `tilesMax` counts over all
 * frames: with a grid of n tiles, floor(tilesMax / n) of the sampled frames (spread evenly, the
 * first always) are tiled.
 */
export function planCrops(
  image: { format: string; pages: number; width: number; height: number },
  config: Pick<PreprocessConfig, "cropWidth" | "cropHeight">,
  sampling: SamplingOptions,
  withTiles: boolean,
): CropPlanResult {
  const pages = ANIMATED_FORMATS.has(image.format) ? image.pages : 1;
  const frames = sampleFrameIndices(pages, sampling.framesMax).filter((f, i, all) => all.indexOf(f) === i);
  const tiles = withTiles ? tileGrid(image.width, image.height, modelInputSize(config), sampling.tilesRatio, sampling.tilesMax) : [];
  if (tiles.length === 0) return { frames, tiledFrames: [], tiles: [] };
  const tiledCount = Math.max(1, Math.min(frames.length, Math.floor(sampling.tilesMax / tiles.length)));
  const tiledFrames = sampleFrameIndices(frames.length, tiledCount).map((i) => frames[i] ?? 0);
  return { frames, tiledFrames, tiles };
}
