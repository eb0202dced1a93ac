import type { Redis } from "ioredis";

/**
 * Image embeddings by image sha256 and model fingerprint: an image seen before is judged again
 * (against the current policies) without decoding it or running the image tower.
 */
export interface ImageEmbeddingCache {
  get(fingerprint: string, sha256: string): Promise<Float32Array | undefined>;
  set(fingerprint: string, sha256: string, embedding: Float32Array): Promise<void>;
}

/** The Redis-backed cache the worker uses; values are raw float32 bytes with a TTL. */
export class RedisImageEmbeddingCache implements ImageEmbeddingCache {
  constructor(
    private readonly redis: Redis,
    private readonly options: { ttlSeconds: number; prefix?: string },
  ) {}

  private key(fingerprint: string, sha256: string): string {
    return `${this.options.prefix ?? "clipguard:imgemb"}:${fingerprint}:${sha256}`;
  }

  async get(fingerprint: string, sha256: string): Promise<Float32Array | undefined> {
    const value = await this.redis.getBuffer(this.key(fingerprint, sha256));
    if (value === null || value.length === 0 || value.length % 4 !== 0) return undefined;
    const copy = new Float32Array(value.length / 4);
    new Uint8Array(copy.buffer).set(value);
    return copy;
  }

  async set(fingerprint: string, sha256: string, embedding: Float32Array): Promise<void> {
    const bytes = Buffer.from(embedding.buffer, embedding.byteOffset, embedding.byteLength);
    if (this.options.ttlSeconds > 0) await this.redis.set(this.key(fingerprint, sha256), bytes, "EX", this.options.ttlSeconds);
    else await this.redis.set(this.key(fingerprint, sha256), bytes);
  }
}
