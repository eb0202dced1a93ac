/**
 * Labelled images → image embeddings, each image through the vision tower at most once: the
 * on-disk {@link EmbeddingStore} first, then preprocessing and inference in small batches for
 * the misses. Images that cannot be read or decoded are collected as failures, never thrown.
 */
import type { DecodeLimits } from "../clip/image-decode.js";
import { preprocessImage } from "../clip/preprocess.js";
import { sha256Hex, type ModeratorModel } from "../policies/image-moderator.js";
import { ClipguardError, toErrorInfo, type ErrorCode } from "../shared/errors.js";
import { readImageFile } from "../shared/image-bytes.js";
import type { EmbeddingStore } from "./embedding-store.js";
import type { LabelledImage } from "./labelled-set.js";

export interface EmbeddedImage {
  image: LabelledImage;
  sha256: string;
  /** As the vision tower returned it (callers normalize). */
  embedding: Float32Array;
}

/** An image left out of the evaluation, and why. */
export interface FailedImage {
  path: string;
  /** Where it was labelled (`red/`, `labels.csv:12`). */
  origin: string;
  code: ErrorCode;
  message: string;
}

/** What embedding the set cost; `embedded + fromCache + failed = total`. */
export interface EmbeddingCounts {
  total: number;
  /** Images whose embedding came from the vision tower in this run. */
  embedded: number;
  /** Images whose embedding came from the disk cache (or an identical file earlier in this run). */
  fromCache: number;
  failed: number;
  /** `embedPixels` calls (batches) made. */
  visionTowerRuns: number;
}

export interface EmbedImagesOptions {
  limits: DecodeLimits;
  /** The embedding length the policies were compiled with; cache entries of another length are ignored. */
  dimension: number;
  /** Images per vision-tower run. @default 8 */
  batchSize?: number;
  /** Called after each image is done (embedded, cached or failed). */
  onProgress?: (done: number, total: number) => void;
  onFailure?: (failure: FailedImage) => void;
}

/**
 * Embeds every image of `images` (in order; failures left out).
 * @throws what the vision tower throws (`CLIPGUARD_E_INFERENCE`, `CLIPGUARD_E_MODEL`): a model that
 *   cannot run is not one bad image
 */
export async function embedImages(
  images: readonly LabelledImage[],
  model: ModeratorModel,
  store: EmbeddingStore,
  options: EmbedImagesOptions,
): Promise<{ embedded: EmbeddedImage[]; failures: FailedImage[]; counts: EmbeddingCounts }> {
  const batchSize = Math.max(1, options.batchSize ?? 8);
  const counts: EmbeddingCounts = { total: images.length, embedded: 0, fromCache: 0, failed: 0, visionTowerRuns: 0 };
  const bySha = new Map<string, Float32Array>();
  const results: (EmbeddedImage | undefined)[] = new Array<EmbeddedImage | undefined>(images.length);
  const failures: FailedImage[] = [];
  let done = 0;
  const progress = () => options.onProgress?.(++done, images.length);

  // images waiting for the vision tower, and the indices (same bytes may appear twice) they answer
  let pending: { sha256: string; pixels: Float32Array; indices: number[] }[] = [];
  const flush = async () => {
    if (pending.length === 0) return;
    const batch = pending;
    pending = [];
    const size = batch.reduce((n, p) => n + p.pixels.length, 0);
    const pixels = new Float32Array(size);
    let offset = 0;
    for (const p of batch) {
      pixels.set(p.pixels, offset);
      offset += p.pixels.length;
    }
    const embeddings = await model.embedPixels(pixels, batch.length);
    counts.visionTowerRuns++;
    if (embeddings.length !== batch.length) {
      throw new ClipguardError("CLIPGUARD_E_INTERNAL", `the image tower returned ${embeddings.length} embeddings for ${batch.length} images`);
    }
    for (const [k, p] of batch.entries()) {
      const embedding = embeddings[k] as Float32Array;
      await store.set(p.sha256, embedding);
      bySha.set(p.sha256, embedding);
      counts.embedded++;
      for (const [n, index] of p.indices.entries()) {
        if (n > 0) counts.fromCache++;
        results[index] = { image: images[index] as LabelledImage, sha256: p.sha256, embedding };
        progress();
      }
    }
  };

  for (const [index, image] of images.entries()) {
    try {
      const bytes = await readImageFile(image.path, options.limits.maxBytes);
      const sha256 = sha256Hex(bytes);
      const waiting = pending.find((p) => p.sha256 === sha256);
      if (waiting) {
        waiting.indices.push(index);
        continue;
      }
      const known = bySha.get(sha256) ?? (await store.get(sha256, options.dimension));
      if (known !== undefined) {
        bySha.set(sha256, known);
        counts.fromCache++;
        results[index] = { image, sha256, embedding: known };
        progress();
        continue;
      }
      const { pixels } = await preprocessImage(bytes, model.preprocess, options.limits);
      pending.push({ sha256, pixels, indices: [index] });
    } catch (err) {
      const info = toErrorInfo(err);
      const failure: FailedImage = { path: image.path, origin: image.origin, code: info.code, message: info.message };
      failures.push(failure);
      counts.failed++;
      options.onFailure?.(failure);
      progress();
    }
    if (pending.length >= batchSize) await flush();
  }
  await flush();
  return { embedded: results.filter((r): r is EmbeddedImage => r !== undefined), failures, counts };
}
