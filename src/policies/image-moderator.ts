import { createHash } from "node:crypto";
import type { DecodeLimits } from "../clip/image-decode.js";
import { preprocessImage, type PreprocessOptions } from "../clip/preprocess.js";
import type { ImageEmbedder, PreprocessConfig } from "../clip/types.js";
import { ClipguardError, toErrorInfo } from "../shared/errors.js";
import type { Verdict } from "../shared/verdict.js";
import type { CompiledPolicySet } from "./compiled-policies.js";
import type { ImageEmbeddingCache } from "./image-embedding-cache.js";

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

/** What judging one image cost, in milliseconds, and whether its embedding came from the cache. */
export interface StageTimings {
  decodeMs: number;
  inferenceMs: number;
  embeddingCached: boolean;
}

const round4 = (x: number): number => Math.round(x * 10_000) / 10_000;

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/**
 * Bytes in, verdict out: decode and preprocess under the limits, run the image tower, judge
 * against the current policy set. With an embedding cache, an image seen before (same sha256,
 * same model) skips decoding and inference. Errors become `decision: "error"` verdicts, never
 * exceptions, so one bad image cannot stop a batch. A failing cache is treated as a miss.
 */
export class ImageModerator {
  constructor(
    private readonly model: ModeratorModel,
    private readonly policies: () => CompiledPolicySet,
    private readonly limits: DecodeLimits & PreprocessOptions,
    private readonly cache?: ImageEmbeddingCache,
  ) {}

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

  private async embed(bytes: Uint8Array, sha256: string, timings: StageTimings): Promise<Float32Array> {
    const fingerprint = this.model.info.fingerprint;
    const cached = await this.cache?.get(fingerprint, sha256).catch(() => undefined);
    if (cached !== undefined) {
      timings.embeddingCached = true;
      return cached;
    }
    const t0 = performance.now();
    const { pixels } = await preprocessImage(bytes, this.model.preprocess, this.limits, this.limits);
    const t1 = performance.now();
    timings.decodeMs = t1 - t0;
    const [embedding] = await this.model.embedPixels(pixels, 1);
    timings.inferenceMs = performance.now() - t1;
    if (embedding === undefined) throw new ClipguardError("CLIPGUARD_E_INFERENCE", "the image tower returned no embedding");
    await this.cache?.set(fingerprint, sha256, embedding).catch(() => undefined);
    return embedding;
  }

  async moderate(bytes: Uint8Array, options: ModerateOptions = {}): Promise<{ verdict: Verdict; timings: StageTimings }> {
    const compiled = this.policies();
    const sha256 = sha256Hex(bytes);
    const timings: StageTimings = { decodeMs: 0, inferenceMs: 0, embeddingCached: false };
    try {
      const judgement = compiled.judge(await this.embed(bytes, sha256, timings), options.policies);
      const verdict: Verdict = {
        ...(options.image !== undefined ? { image: options.image } : {}),
        decision: judgement.decision,
        policies: judgement.policies.map((p) => ({ id: p.id, score: round4(p.score), decision: p.decision, prompt: p.prompt })),
        ...this.tail(compiled.version, sha256),
      };
      return { verdict, timings };
    } catch (err) {
      return { verdict: this.errorVerdict(err, options, sha256, compiled.version), timings };
    }
  }
}
