/** What the rest of clipguard knows about a CLIP model: two towers into one embedding space. */

/** `preprocessor_config.json` fields that CLIPImageProcessor uses, normalized. */
export interface PreprocessConfig {
  /** Resize so that the shortest edge equals this (CLIP: 224). */
  shortestEdge: number;
  /** Center-crop size after resizing. */
  cropHeight: number;
  cropWidth: number;
  doCenterCrop: boolean;
  doResize: boolean;
  doNormalize: boolean;
  /** Pixel values are multiplied by this before normalization (CLIP: 1/255). */
  rescaleFactor: number;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
}

/** Something that turns prompt texts into L2-normalized embeddings. */
export interface TextEmbedder {
  /** Names the model in cache keys and verdicts. */
  readonly fingerprint: string;
  /** One L2-normalized embedding per text, in order. */
  embedTexts(texts: readonly string[]): Promise<Float32Array[]>;
}

/** Something that turns preprocessed pixel tensors into L2-normalized embeddings. */
export interface ImageEmbedder {
  readonly fingerprint: string;
  /** `pixels` holds `count` images, each CHW float32 of the model's input size. */
  embedPixels(pixels: Float32Array, count: number): Promise<Float32Array[]>;
}
