import type { ErrorCode } from "./errors.js";

/** allow < review < block; `error` when the image could not be judged. */
export type Decision = "allow" | "review" | "block";

export interface PolicyVerdict {
  id: string;
  /** Cosine similarity (scoring: similarity) or probability (scoring: contrastive), rounded to 4 decimals. */
  score: number;
  decision: Decision;
  /** The policy prompt closest to the image: an explanation for reviewers. */
  prompt: string;
  /** Animations (more than one frame scored): the index in the source of the frame that decided. */
  frame?: number;
  /** `tiles: true` policies, when a tile decided: `[x, y, width, height]` of the tile the model saw, in source pixels. */
  region?: [number, number, number, number];
}

/** One judged image: what `clipguard score` prints and what the worker publishes (plus job fields). */
export interface Verdict {
  image?: string;
  decision: Decision | "error";
  policies: PolicyVerdict[];
  /** Frames scored, for an animation of which more than one frame was scored. */
  frames?: number;
  imageSha256?: string;
  model: { name: string; fingerprint: string };
  policyVersion: string;
  error?: { code: ErrorCode; message: string };
}
