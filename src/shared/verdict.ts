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
}

/** One judged image: what `clipguard score` prints and what the worker publishes (plus job fields). */
export interface Verdict {
  image?: string;
  decision: Decision | "error";
  policies: PolicyVerdict[];
  imageSha256?: string;
  model: { name: string; fingerprint: string };
  policyVersion: string;
  error?: { code: ErrorCode; message: string };
}
