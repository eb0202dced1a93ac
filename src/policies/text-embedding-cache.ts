/**
 * Where compiled prompt embeddings are kept between compiles, keyed by model fingerprint and
 * text, so that reloading a policies file only runs the text tower for new or changed prompts.
 */

export interface TextEmbeddingCache {
  /** One entry per text, in order: the stored embedding, or `undefined` on a miss. */
  getMany(fingerprint: string, texts: readonly string[]): Promise<(Float32Array | undefined)[]>;
  setMany(fingerprint: string, entries: readonly (readonly [string, Float32Array])[]): Promise<void>;
}

export interface MemoryTextEmbeddingCacheOptions {
  /**
   * Entries kept; the least recently used go first. 500 policies × 64 prompts and as many
   * negatives fit in the default.
   * @default 100_000
   */
  maxEntries?: number;
}

/**
 * An in-process cache, for one process (CLI, tests, a single worker). Stores and returns copies,
 * so nobody can change a cached embedding through a shared array.
 */
export class MemoryTextEmbeddingCache implements TextEmbeddingCache {
  private readonly entries = new Map<string, Float32Array>();
  private readonly maxEntries: number;
  private hits = 0;
  private misses = 0;

  constructor(options: MemoryTextEmbeddingCacheOptions = {}) {
    this.maxEntries = Math.max(1, options.maxEntries ?? 100_000);
  }

  // NUL cannot appear in a fingerprint, so `fingerprint + NUL + text` keys never collide.
  private static key(fingerprint: string, text: string): string {
    return `${fingerprint}\u0000${text}`;
  }

  getMany(fingerprint: string, texts: readonly string[]): Promise<(Float32Array | undefined)[]> {
    const found = texts.map((text) => {
      const key = MemoryTextEmbeddingCache.key(fingerprint, text);
      const value = this.entries.get(key);
      if (value === undefined) {
        this.misses++;
        return undefined;
      }
      this.hits++;
      // Re-insert so that Map order is least recently used first.
      this.entries.delete(key);
      this.entries.set(key, value);
      return value.slice();
    });
    return Promise.resolve(found);
  }

  setMany(fingerprint: string, entries: readonly (readonly [string, Float32Array])[]): Promise<void> {
    for (const [text, embedding] of entries) {
      const key = MemoryTextEmbeddingCache.key(fingerprint, text);
      this.entries.delete(key);
      this.entries.set(key, embedding.slice());
    }
    for (const oldest of this.entries.keys()) {
      if (this.entries.size <= this.maxEntries) break;
      this.entries.delete(oldest);
    }
    return Promise.resolve();
  }

  /** Lookups answered from the cache and lookups that were not, since construction. */
  stats(): { hits: number; misses: number } {
    return { hits: this.hits, misses: this.misses };
  }

  /** Entries currently stored. */
  get size(): number {
    return this.entries.size;
  }
}
