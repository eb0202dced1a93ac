import { createHash } from "node:crypto";
import type { ImageEmbedder, PreprocessConfig } from "../clip/types.js";
import type { DecodeLimits } from "../clip/image-decode.js";
import { preprocessImage } from "../clip/preprocess.js";
import { ClipguardError, toErrorInfo } from "../shared/errors.js";
import type { Verdict } from "../shared/verdict.js";
import type { CompiledPolicySet } from "./compiled-policies.js";

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

/** Time spent per stage of one image, in milliseconds. */
export interface StageTimings {
  decodeMs: number;
  inferenceMs: number;
}

const round4 = (x: number): number => Math.round(x * 10_000) / 10_000;

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/**
 * Bytes in, verdict out: decode and preprocess under the limits, run the image tower, judge
 * against the current policy set. Errors become `decision: "error"` verdicts, never exceptions,
 * so one bad image cannot stop a batch.
 */
export class ImageModerator {
  constructor(
    private readonly model: ModeratorModel,
    private readonly policies: () => CompiledPolicySet,
    private readonly limits: DecodeLimits,
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
  errorVerdict(err: unknown, options: ModerateOptions = {}, bytes?: Uint8Array): Verdict {
    return {
      ...(options.image !== undefined ? { image: options.image } : {}),
      decision: "error",
      policies: [],
      ...this.tail(this.policies().version, bytes),
      error: toErrorInfo(err),
    };
  }

  private tail(policyVersion: string, bytes?: Uint8Array) {
    return {
      ...(bytes !== undefined ? { imageSha256: sha256Hex(bytes) } : {}),
      model: { name: this.model.info.name, fingerprint: this.model.info.fingerprint },
      policyVersion,
    };
  }

  async moderate(bytes: Uint8Array, options: ModerateOptions = {}): Promise<{ verdict: Verdict; timings: StageTimings }> {
    const compiled = this.policies();
    const label = options.image !== undefined ? { image: options.image } : {};
    const tail = this.tail(compiled.version, bytes);
    const timings: StageTimings = { decodeMs: 0, inferenceMs: 0 };
    try {
      const t0 = performance.now();
      const { pixels } = await preprocessImage(bytes, this.model.preprocess, this.limits);
      const t1 = performance.now();
      timings.decodeMs = t1 - t0;
      const [embedding] = await this.model.embedPixels(pixels, 1);
      timings.inferenceMs = performance.now() - t1;
      if (embedding === undefined) throw new Error("the image tower returned no embedding");
      const judgement = compiled.judge(embedding, options.policies);
      const verdict: Verdict = {
        ...label,
        decision: judgement.decision,
        policies: judgement.policies.map((p) => ({ id: p.id, score: round4(p.score), decision: p.decision, prompt: p.prompt })),
        ...tail,
      };
      return { verdict, timings };
    } catch (err) {
      return { verdict: this.errorVerdict(err, options, bytes), timings };
    }
  }
}
