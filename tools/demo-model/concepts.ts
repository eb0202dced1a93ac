/**
 * What the demo model "knows": six colour/brightness concepts plus a generic "this is an image"
 * direction, each a fixed unit vector in a small embedding space, and the words that name them.
 * Both towers are built from these numbers, so image and text embeddings share one space.
 */
import { SeededRandom } from "../onnx/seeded-random.js";

/** Size of the shared embedding space (config.json `projection_dim`). */
export const EMBED_DIM = 16;

/** The per-pixel features of the image tower, in channel order. */
export const CONCEPT_NAMES = ["red", "green", "blue", "yellow", "dark", "bright"] as const;
export type ConceptName = (typeof CONCEPT_NAMES)[number];

/**
 * Weight of the generic direction in every image embedding. It keeps featureless images (gray,
 * mid-tones) away from the zero vector, and it is small enough that a solid red image scores
 * ≈ 1.0 against "a red image" but only ≈ 0.45 against the same prompt when the image is gray.
 */
export const IMAGE_GENERIC_WEIGHT = 0.5;
/** Generic weight contributed by the start token and by each image word ("image", "photo" …). */
export const TOKEN_GENERIC_WEIGHT = 0.25;

/** Luminance (Rec. 601) below DARK_LEVEL counts as dark, above BRIGHT_LEVEL as bright. */
export const LUMA = [0.299, 0.587, 0.114] as const;
export const DARK_LEVEL = 0.35;
export const BRIGHT_LEVEL = 0.65;

/** Words that name each concept (lowercase; the tokenizer lowercases its input). */
export const CONCEPT_WORDS: Readonly<Record<ConceptName, readonly string[]>> = {
  red: ["red", "reddish", "crimson", "scarlet", "ruby", "cherry", "vermilion"],
  green: ["green", "greenish", "emerald", "lime", "jade", "leafy", "grassy"],
  blue: ["blue", "bluish", "azure", "navy", "cobalt", "sapphire", "ultramarine"],
  yellow: ["yellow", "yellowish", "golden", "gold", "lemon", "amber", "mustard"],
  dark: ["dark", "darkness", "black", "night", "nighttime", "shadowy", "shadow", "dim", "gloomy", "unlit"],
  bright: ["bright", "brightly", "white", "light", "lit", "sunny", "brilliant", "glowing", "pale", "overexposed"],
};

/** Words that say "this is an image"; they add the generic direction. */
export const IMAGE_WORDS: readonly string[] = [
  "image", "images", "photo", "photos", "photograph", "picture", "pictures", "pic", "snapshot", "shot", "scene", "frame",
];

/** Known words that carry no meaning for this model (embedded as zero, like unknown words). */
export const NEUTRAL_WORDS: readonly string[] = [
  "a", "an", "the", "of", "this", "that", "these", "it", "its", "is", "are", "with", "and", "or", "in", "on", "at",
  "by", "for", "to", "from", "mostly", "mainly", "very", "some", "all", "almost", "entirely", "completely", "full",
  "filled", "covered", "plain", "solid", "colour", "color", "colours", "colors", "coloured", "colored", "tone",
  "toned", "background", "object", "thing", "something", "showing", "shows", "containing", "not", "no",
];

export const UNKNOWN_TOKEN = "[UNK]";
export const START_TOKEN = "<|startoftext|>";
export const END_TOKEN = "<|endoftext|>";

/** One vocabulary entry and what it embeds to. */
export interface VocabularyEntry {
  token: string;
  concept: ConceptName | "generic" | "none";
}

/** The whole vocabulary in id order; the special tokens come last, as in CLIP. */
export function vocabulary(): VocabularyEntry[] {
  const entries: VocabularyEntry[] = [
    ...NEUTRAL_WORDS.map((token) => ({ token, concept: "none" as const })),
    ...IMAGE_WORDS.map((token) => ({ token, concept: "generic" as const })),
    ...CONCEPT_NAMES.flatMap((concept) => CONCEPT_WORDS[concept].map((token) => ({ token, concept }))),
    { token: UNKNOWN_TOKEN, concept: "none" },
    { token: START_TOKEN, concept: "generic" },
    { token: END_TOKEN, concept: "none" },
  ];
  const seen = new Set<string>();
  for (const { token } of entries) {
    if (seen.has(token)) throw new Error(`demo vocabulary lists ${token} twice`);
    seen.add(token);
  }
  return entries;
}

/** Id of a token in {@link vocabulary}. */
export function tokenId(token: string): number {
  const id = vocabulary().findIndex((entry) => entry.token === token);
  if (id < 0) throw new Error(`demo vocabulary has no ${token}`);
  return id;
}

/**
 * Orthonormal directions for the six concepts and the generic one (index 6), drawn once from a
 * fixed seed and orthonormalized (Gram–Schmidt) so that embeddings look dense like real ones
 * while concepts stay exactly independent.
 */
export function conceptDirections(): Float64Array[] {
  const random = new SeededRandom(20240501);
  const directions: Float64Array[] = [];
  for (let k = 0; k <= CONCEPT_NAMES.length; k++) {
    const v = Float64Array.from({ length: EMBED_DIM }, () => random.normal());
    for (const u of directions) {
      const dot = v.reduce((sum, x, i) => sum + x * (u[i] ?? 0), 0);
      for (let i = 0; i < EMBED_DIM; i++) v[i] = (v[i] ?? 0) - dot * (u[i] ?? 0);
    }
    const length = Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));
    directions.push(v.map((x) => x / length));
  }
  return directions;
}

/** Index of the generic direction in {@link conceptDirections}. */
export const GENERIC_INDEX = CONCEPT_NAMES.length;
