import { createHash } from "node:crypto";
import pLimit, { type LimitFunction } from "p-limit";
import { DEFAULT_SAMPLING, modelInputSize, type SamplingOptions } from "../clip/crop-plan.js";
import { preprocessCrops } from "../clip/image-crops.js";
import type { DecodeLimits } from "../clip/image-decode.js";
import type { PreprocessOptions } from "../clip/preprocess.js";
import type { ImageEmbedder, PreprocessConfig } from "../clip/types.js";
import { ClipguardError, toErrorInfo } from "../shared/errors.js";
import type { Verdict } from "../shared/verdict.js";
import type { CompiledPolicySet } from "./compiled-policies.js";
import { entryServes, samplingKey, type ImageEmbeddingCache, type StoredEmbeddings } from "./image-embedding-cache.js";
import { DEFAULT_FRAME_COMBINE, judgeEmbeddings, verdictFields, type FrameCombine } from "./image-judgement.js";

/** The parts of a loaded model the moderator needs. */
export interface ModeratorModel extends ImageEmbedder {
  readonly info: { name: string; fingerprint: string };
  readonly preprocess: PreprocessConfig;
}

export interface ModerateOptions {
  /** A label for the image in the verdict (file name, caller's id). */
  image?: string;
  /** Judge only these policy ids. @default all loaded policies */
  policies?: readonly string[];
}

/** How animations and large canvases are scored. */
export interface ImageSamplingSettings {
  /** @default DEFAULT_SAMPLING (8 frames, tiles past 2× the input size, 9 tiles) */
  sampling?: SamplingOptions;
  /** @default max */
  combine?: FrameCombine;
  /**
   * Images decoded at the same time. Decoding competes with the image tower's threads for the
   * same cores; more decodes in flight than needed to keep the tower fed only slows the tower.
   * @default unlimited
   */
  decodeConcurrency?: number;
}

/** What judging one image cost, in milliseconds, and whether its embeddings came from the cache. */
export interface StageTimings {
  decodeMs: number;
  inferenceMs: number;
  embeddingCached: boolean;
  /** Frames scored (1 for a still image); 0 when the image could not be judged. */
  frames: number;
  /** Tiles scored, over all frames. */
  tiles: number;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/**
 * Bytes in, verdict out: decode and preprocess under the limits (the sampled frames of an
 * animation; the tiles of a large image when a judged policy has `tiles: true`), run the image
 * tower once for all of them, judge against the current policy set. With an embedding cache, an
 * image seen before (same sha256, model and sampling settings) skips decoding and inference.
 * Errors become `decision: "error"` verdicts, never exceptions, so one bad image cannot stop a
 * batch. A failing cache is treated as a miss.
 */
export class ImageModerator {
  private readonly sampling: SamplingOptions;
  private readonly combine: FrameCombine;
  private readonly decodeSlot: LimitFunction | undefined;

  constructor(
    private readonly model: ModeratorModel,
    private readonly policies: () => CompiledPolicySet,
    private readonly limits: DecodeLimits & PreprocessOptions,
    private readonly cache?: ImageEmbeddingCache,
    settings: ImageSamplingSettings = {},
  ) {
    this.sampling = settings.sampling ?? DEFAULT_SAMPLING;
    this.combine = settings.combine ?? DEFAULT_FRAME_COMBINE;
    this.decodeSlot = settings.decodeConcurrency === undefined ? undefined : pLimit(settings.decodeConcurrency);
  }

  /** Decodes running and waiting for a slot (see `decodeConcurrency`); both 0 when unlimited. */
  get decodeLoad(): { running: number; waiting: number } {
    return { running: this.decodeSlot?.activeCount ?? 0, waiting: this.decodeSlot?.pendingCount ?? 0 };
  }

  /** Refuses unknown policy ids before any image work (CLIPGUARD_E_POLICY_UNKNOWN). */
  assertPolicies(ids: readonly string[]): void {
    const known = new Set(this.policies().policies.map((p) => p.id));
    const unknown = ids.filter((id) => !known.has(id));
    if (unknown.length > 0) {
      throw new ClipguardError("CLIPGUARD_E_POLICY_UNKNOWN", `unknown policy ids: ${unknown.join(", ")}; loaded: ${[...known].join(", ")}`);
    }
  }

  /** The verdict for an image that could not be judged (unreadable, refused, undecodable). */
  errorVerdict(err: unknown, options: ModerateOptions = {}, sha256?: string, policyVersion = this.policies().version): Verdict {
    return {
      ...(options.image !== undefined ? { image: options.image } : {}),
      decision: "error",
      policies: [],
      ...this.tail(policyVersion, sha256),
      error: toErrorInfo(err),
    };
  }

  private tail(policyVersion: string, sha256?: string) {
    return {
      ...(sha256 !== undefined ? { imageSha256: sha256 } : {}),
      model: { name: this.model.info.name, fingerprint: this.model.info.fingerprint },
      policyVersion,
    };
  }

  private async embed(bytes: Uint8Array, sha256: string, wantTiles: boolean, timings: StageTimings): Promise<StoredEmbeddings> {
    const fingerprint = this.model.info.fingerprint;
    const key = samplingKey(this.sampling);
    const cached = await this.cache?.get(fingerprint, sha256, key).catch(() => undefined);
    if (cached !== undefined && entryServes(cached, wantTiles, modelInputSize(this.model.preprocess), this.sampling)) {
      timings.embeddingCached = true;
      return cached;
    }
    let t0 = 0;
    const decode = () => {
      t0 = performance.now();
      return preprocessCrops(bytes, this.model.preprocess, this.sampling, wantTiles, this.limits, this.limits);
    };
    const crops = await (this.decodeSlot === undefined ? decode() : this.decodeSlot(decode));
    const t1 = performance.now();
    timings.decodeMs = t1 - t0;
    // frames and tiles of one image: one run of the image tower
    const embeddings = await this.model.embedPixels(crops.pixels, crops.items.length);
    timings.inferenceMs = performance.now() - t1;
    if (embeddings.length !== crops.items.length) {
      throw new ClipguardError("CLIPGUARD_E_INFERENCE", `the image tower returned ${embeddings.length} embeddings for ${crops.items.length} crops`);
    }
    const stored: StoredEmbeddings = {
      width: crops.info.width,
      height: crops.info.height,
      frames: crops.frames,
      tiled: wantTiles,
      items: crops.items,
      embeddings,
    };
    await this.cache?.set(fingerprint, sha256, key, stored).catch(() => undefined);
    return stored;
  }

  async moderate(bytes: Uint8Array, options: ModerateOptions = {}): Promise<{ verdict: Verdict; timings: StageTimings }> {
    const compiled = this.policies();
    const sha256 = sha256Hex(bytes);
    const timings: StageTimings = { decodeMs: 0, inferenceMs: 0, embeddingCached: false, frames: 0, tiles: 0 };
    try {
      const only = options.policies === undefined ? undefined : new Set(options.policies);
      const wantTiles = compiled.policies.some((p) => p.tiles && (only === undefined || only.has(p.id)));
      const stored = await this.embed(bytes, sha256, wantTiles, timings);
      const judgement = judgeEmbeddings(compiled, stored, options.policies, this.combine);
      timings.frames = judgement.frames;
      timings.tiles = stored.items.filter((item) => item.region !== undefined).length;
      const verdict: Verdict = {
        ...(options.image !== undefined ? { image: options.image } : {}),
        ...verdictFields(judgement),
        ...this.tail(compiled.version, sha256),
      };
      return { verdict, timings };
    } catch (err) {
      return { verdict: this.errorVerdict(err, options, sha256, compiled.version), timings };
    }
  }
}
