import type { Config } from "../shared/config.js";
import type { ImageSamplingSettings } from "./image-moderator.js";

/**
 * Frame and tile settings from the configuration (CLIPGUARD_FRAMES_*, CLIPGUARD_TILES_*): the
 * worker, `clipguard rescore` and the API's rescore must agree on them, since they are part of
 * the image-embedding cache key.
 */
export function imageSamplingFromConfig(config: Config): Required<Pick<ImageSamplingSettings, "sampling" | "combine">> {
  return {
    sampling: { framesMax: config.CLIPGUARD_FRAMES_MAX, tilesRatio: config.CLIPGUARD_TILES_RATIO, tilesMax: config.CLIPGUARD_TILES_MAX },
    combine: { mode: config.CLIPGUARD_FRAMES_COMBINE, k: config.CLIPGUARD_FRAMES_K },
  };
}
