import type { ImageEmbedder, TextEmbedder } from "./types.js";

/**
 * Wraps a model and counts the runs of each tower, for commands that report what they cost
 * (`clipguard rescore` shows that the image tower never ran).
 */
export class CountingEmbedder implements TextEmbedder, ImageEmbedder {
  readonly counters = { textRuns: 0, textsEmbedded: 0, imageRuns: 0, imagesEmbedded: 0 };

  constructor(private readonly model: TextEmbedder & ImageEmbedder) {}

  get fingerprint(): string {
    return this.model.fingerprint;
  }

  embedTexts(texts: readonly string[]): Promise<Float32Array[]> {
    if (texts.length > 0) {
      this.counters.textRuns++;
      this.counters.textsEmbedded += texts.length;
    }
    return this.model.embedTexts(texts);
  }

  embedPixels(pixels: Float32Array, count: number): Promise<Float32Array[]> {
    if (count > 0) {
      this.counters.imageRuns++;
      this.counters.imagesEmbedded += count;
    }
    return this.model.embedPixels(pixels, count);
  }
}
