import { createHash } from "node:crypto";
import type { Redis } from "ioredis";
import type { TextEmbeddingCache } from "./text-embedding-cache.js";

/**
 * Text embeddings shared between workers through Redis, keyed by model fingerprint and prompt
 * (hashed, so prompts of any length make bounded keys). Values are the raw float32 bytes.
 * A second worker with the same model and policies finds every prompt here and never runs the
 * text tower.
 */
export class RedisTextEmbeddingCache implements TextEmbeddingCache {
  private hits = 0;
  private misses = 0;

  constructor(
    private readonly redis: Redis,
    private readonly options: { prefix?: string; ttlSeconds: number },
  ) {}

  private key(fingerprint: string, text: string): string {
    const digest = createHash("sha256").update(text).digest("hex");
    return `${this.options.prefix ?? "clipguard:textemb"}:${fingerprint}:${digest}`;
  }

  async getMany(fingerprint: string, texts: readonly string[]): Promise<(Float32Array | undefined)[]> {
    if (texts.length === 0) return [];
    const values = await this.redis.mgetBuffer(...texts.map((t) => this.key(fingerprint, t)));
    return values.map((value) => {
      // a value whose length is not a whole number of floats is not ours: treat it as a miss
      if (value === null || value.length === 0 || value.length % 4 !== 0) {
        this.misses++;
        return undefined;
      }
      this.hits++;
      const copy = new Float32Array(value.length / 4);
      new Uint8Array(copy.buffer).set(value);
      return copy;
    });
  }

  async setMany(fingerprint: string, entries: readonly (readonly [string, Float32Array])[]): Promise<void> {
    if (entries.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const [text, embedding] of entries) {
      const bytes = Buffer.from(embedding.buffer, embedding.byteOffset, embedding.byteLength);
      if (this.options.ttlSeconds > 0) pipeline.set(this.key(fingerprint, text), bytes, "EX", this.options.ttlSeconds);
      else pipeline.set(this.key(fingerprint, text), bytes);
    }
    await pipeline.exec();
  }

  stats(): { hits: number; misses: number } {
    return { hits: this.hits, misses: this.misses };
  }
}
