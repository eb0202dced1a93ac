import sharp, { type Metadata, type Sharp } from "sharp";
import { ClipguardError } from "../shared/errors.js";
import { ALLOWED_IMAGE_FORMATS_TEXT, checkImageBytes, formatName, type ImageFormat } from "./image-format.js";

/**
 * The small adapter between untrusted image bytes and sharp: the format allowlist, header-only
 * size checks, and the sharp input options every decode uses. Errors leave here as
 * `CLIPGUARD_E_IMAGE_*` codes, never as raw sharp errors.
 */

export interface DecodeLimits {
  /**
   * Largest accepted input, in bytes.
   * @default 20 MiB (CLIPGUARD_MAX_IMAGE_BYTES)
   */
  maxBytes: number;
  /**
   * Largest accepted width × height of the decoded frame, checked from the header before any
   * pixel is decoded, and passed to sharp as `limitInputPixels`.
   * @default 40_000_000 (CLIPGUARD_MAX_PIXELS)
   */
  maxPixels: number;
}

export const DEFAULT_DECODE_LIMITS: Readonly<DecodeLimits> = Object.freeze({
  maxBytes: 20 * 1024 * 1024,
  maxPixels: 40_000_000,
});

/**
 * Animated and multi-page images (GIF, WebP, TIFF, AVIF sequences): the whole animation, i.e. the
 * header's `pages × width × height`, may be at most this many times `maxPixels`. Up to
 * CLIPGUARD_FRAMES_MAX frames are decoded, but the loaders walk the file to count frames and
 * render a frame from the ones before it. With the defaults that is 400 megapixels: e.g. 400
 * frames of 1000×1000, or ~3000 frames of 480×270.
 */
export const MULTI_PAGE_PIXEL_FACTOR = 10;

/** What the header says about an image that passed the format and size checks. */
export interface ImageInfo {
  format: ImageFormat;
  /** Width as displayed, i.e. after the EXIF orientation is applied. */
  width: number;
  /** Height as displayed, i.e. after the EXIF orientation is applied. */
  height: number;
  /** Number of frames or pages (1 for a still image). */
  pages: number;
  /** The EXIF orientation tag (1–8), when the image has one. */
  orientation?: number;
  /** Whether the decoded frame carries an alpha channel (dropped by preprocessing). */
  hasAlpha: boolean;
}

/**
 * Opens `bytes` with the input options every decode must use:
 * - `failOn: "error"`: truncated or corrupt pixel data aborts instead of decoding to grey. The
 *   stricter default, "warning", also refuses files that decode fine elsewhere (e.g. JPEGs with
 *   extraneous bytes before a marker, which libjpeg only warns about).
 * - `limitInputPixels`: sharp's own check of width × height, a second line behind {@link inspectImage}.
 * - `pages: 1, page`: one frame of an animated or multi-page image (the first unless `page` says
 *   otherwise); the loaders render a frame whole, with the frames before it that it builds on.
 * - `autoOrient`: EXIF orientation applied, as transformers' `load_image` does (`exif_transpose`).
 * - `ignoreIcc`: pixel values are taken as they are, like PIL's `convert("RGB")`, which ignores
 *   embedded ICC profiles. CMYK is still converted with libvips's built-in CMYK profile.
 * Call {@link inspectImage} first: this does not check the format allowlist.
 */
export function openImage(bytes: Uint8Array, limits: DecodeLimits, page = 0): Sharp {
  return sharpInput(bytes, limits.maxPixels, page);
}

function sharpInput(bytes: Uint8Array, limitInputPixels: number | false, page = 0): Sharp {
  return sharp(bytes, { failOn: "error", limitInputPixels, pages: 1, page, autoOrient: true, ignoreIcc: true });
}

/** The sharp/libvips format name and HEIF compression that match an allowed format. */
function matchesDecoder(format: ImageFormat, metadata: Metadata): boolean {
  switch (format) {
    case "avif":
      return metadata.format === "heif" && metadata.compression === "av1";
    case "jpeg":
    case "png":
    case "webp":
    case "gif":
    case "tiff":
      return metadata.format === format;
  }
}

/**
 * Checks the bytes and reads the header only: format allowlist by magic bytes, byte limit, and
 * the pixel limits from the header's dimensions, all before any pixel is decoded.
 *
 * @throws ClipguardError CLIPGUARD_E_IMAGE_EMPTY, CLIPGUARD_E_IMAGE_TOO_LARGE,
 *   CLIPGUARD_E_IMAGE_FORMAT, CLIPGUARD_E_IMAGE_PIXELS, or CLIPGUARD_E_IMAGE_DECODE when the
 *   header cannot be read
 */
export async function inspectImage(bytes: Uint8Array, limits: DecodeLimits = DEFAULT_DECODE_LIMITS): Promise<ImageInfo> {
  const format = checkImageBytes(bytes, limits.maxBytes);
  let metadata: Metadata;
  try {
    // sharp applies limitInputPixels to metadata() too, and its error carries no code; reading the
    // header without it lets the check below say CLIPGUARD_E_IMAGE_PIXELS. No pixels are decoded.
    metadata = await sharpInput(bytes, false).metadata();
  } catch (err) {
    throw decodeError(err, `the ${formatName(format)} header could not be read`);
  }
  if (!matchesDecoder(format, metadata)) {
    const seen = metadata.format === "heif" ? `HEIF/${metadata.compression ?? "unknown"}` : metadata.format;
    throw new ClipguardError(
      "CLIPGUARD_E_IMAGE_FORMAT",
      `the image starts like ${formatName(format)} but decodes as ${seen}; allowed formats: ${ALLOWED_IMAGE_FORMATS_TEXT}`,
    );
  }
  const { width, height } = metadata;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_DECODE", `the ${formatName(format)} header gives no valid size (${width}x${height})`);
  }
  const pixels = width * height;
  if (pixels > limits.maxPixels) {
    throw new ClipguardError(
      "CLIPGUARD_E_IMAGE_PIXELS",
      `the image is ${width}x${height} (${pixels} pixels); the limit is ${limits.maxPixels} (CLIPGUARD_MAX_PIXELS)`,
    );
  }
  const pages = metadata.pages ?? 1;
  if (pages * pixels > MULTI_PAGE_PIXEL_FACTOR * limits.maxPixels) {
    throw new ClipguardError(
      "CLIPGUARD_E_IMAGE_PIXELS",
      `the image has ${pages} frames of ${width}x${height} (${pages * pixels} pixels in all); the limit for all frames is ` +
        `${MULTI_PAGE_PIXEL_FACTOR} x ${limits.maxPixels} (CLIPGUARD_MAX_PIXELS)`,
    );
  }
  const oriented = metadata.autoOrient;
  return {
    format,
    width: oriented.width,
    height: oriented.height,
    pages,
    ...(metadata.orientation !== undefined ? { orientation: metadata.orientation } : {}),
    hasAlpha: metadata.hasAlpha,
  };
}

/**
 * Wraps an error thrown while sharp read or decoded an image as CLIPGUARD_E_IMAGE_DECODE.
 * sharp throws plain Errors without codes, so every sharp failure here means "truncated or
 * corrupt"; the size limits were checked from the header before, so sharp's own
 * `limitInputPixels` cannot be the first to trip. Only the first line of sharp's message is kept:
 * libvips appends earlier errors of the same thread below it.
 */
export function decodeError(err: unknown, what: string): ClipguardError {
  if (err instanceof ClipguardError) return err;
  const detail = err instanceof Error ? (err.message.split("\n")[0] ?? "").trim() : "";
  return new ClipguardError("CLIPGUARD_E_IMAGE_DECODE", detail === "" ? `${what}: the image is truncated or corrupt` : `${what}: ${detail}`, {
    cause: err,
  });
}

/**
 * Process-wide decoder settings for a long-running service: libvips threads per image (decodes
 * already run in parallel across libuv's pool, one per concurrent job) and no operation cache
 * (every image is new, so the cache would only hold memory).
 */
export function configureImageDecoding(options: { threadsPerImage: number }): void {
  sharp.concurrency(options.threadsPerImage);
  sharp.cache(false);
}
