import type { Redis } from "ioredis";
import { tileGrid, type CropItem, type SamplingOptions } from "../clip/crop-plan.js";

/**
 * Image embeddings by image sha256, model fingerprint and sampling parameters: an image seen
 * before is judged again (against the current policies) without decoding it or running the image
 * tower. One entry holds every embedding of the image: its sampled frames and tiles, with the
 * frame index and region of each. `clipguard rescore` reads the same entries.
 */
export interface StoredEmbeddings {
  /** Source size after EXIF orientation (of one frame). */
  width: number;
  height: number;
  /** Frames sampled. */
  frames: number;
  /**
   * Whether tiles were asked for when the entry was made: its tiles are then complete (none
   * when the image was too small to tile). An entry without them cannot judge `tiles: true` policies.
   */
  tiled: boolean;
  /** One per embedding, in the same order. */
  items: CropItem[];
  embeddings: Float32Array[];
}

export interface ImageEmbeddingCache {
  get(fingerprint: string, sha256: string, sampling: string): Promise<StoredEmbeddings | undefined>;
  set(fingerprint: string, sha256: string, sampling: string, value: StoredEmbeddings): Promise<void>;
}

/**
 * The part of the cache key that names how frames and tiles were sampled: entries made with other
 * settings are never returned (a changed CLIPGUARD_FRAMES_MAX re-embeds instead of reusing fewer frames).
 */
export function samplingKey(sampling: SamplingOptions): string {
  return `f${sampling.framesMax}.t${sampling.tilesRatio}x${sampling.tilesMax}`;
}

const MAGIC = "CGE1";

/**
 * `CGE1`, a uint32 LE header length, a JSON header (sizes, items, dimension), then every embedding
 * as float32 LE, one after the other.
 */
export function encodeEmbeddings(value: StoredEmbeddings): Buffer {
  const dimension = value.embeddings[0]?.length ?? 0;
  const header = Buffer.from(
    JSON.stringify({ width: value.width, height: value.height, frames: value.frames, tiled: value.tiled, items: value.items, dimension }),
  );
  const body = Buffer.alloc(value.embeddings.length * dimension * 4);
  value.embeddings.forEach((embedding, i) => {
    if (embedding.length !== dimension) throw new RangeError(`embedding ${i} has ${embedding.length} dimensions, expected ${dimension}`);
    Buffer.from(embedding.buffer, embedding.byteOffset, embedding.byteLength).copy(body, i * dimension * 4);
  });
  const length = Buffer.alloc(4);
  length.writeUInt32LE(header.length);
  return Buffer.concat([Buffer.from(MAGIC, "latin1"), length, header, body]);
}

interface Header {
  width: number;
  height: number;
  frames: number;
  tiled: boolean;
  items: CropItem[];
  dimension: number;
}

function isHeader(value: unknown): value is Header {
  if (typeof value !== "object" || value === null) return false;
  const h = value as Record<string, unknown>;
  const ints = ["width", "height", "frames", "dimension"].every((k) => Number.isInteger(h[k]) && (h[k] as number) > 0);
  return ints && typeof h["tiled"] === "boolean" && Array.isArray(h["items"]) && (h["items"] as unknown[]).length > 0;
}

/** The entry, or undefined for bytes that are not a whole entry (treated as a miss). */
export function decodeEmbeddings(bytes: Buffer): StoredEmbeddings | undefined {
  if (bytes.length < 8 || bytes.toString("latin1", 0, 4) !== MAGIC) return undefined;
  const headerLength = bytes.readUInt32LE(4);
  if (8 + headerLength > bytes.length) return undefined;
  let header: unknown;
  try {
    header = JSON.parse(bytes.toString("utf8", 8, 8 + headerLength));
  } catch {
    return undefined;
  }
  if (!isHeader(header)) return undefined;
  const body = bytes.subarray(8 + headerLength);
  if (body.length !== header.items.length * header.dimension * 4) return undefined;
  const embeddings = header.items.map((_, i) => {
    const copy = new Float32Array(header.dimension);
    new Uint8Array(copy.buffer).set(body.subarray(i * header.dimension * 4, (i + 1) * header.dimension * 4));
    return copy;
  });
  return { width: header.width, height: header.height, frames: header.frames, tiled: header.tiled, items: header.items, embeddings };
}

/** The Redis-backed cache the worker and `clipguard rescore` use; values expire after `ttlSeconds` (0: never). */
export class RedisImageEmbeddingCache implements ImageEmbeddingCache {
  constructor(
    private readonly redis: Redis,
    private readonly options: { ttlSeconds: number; prefix?: string },
  ) {}

  private key(fingerprint: string, sha256: string, sampling: string): string {
    return `${this.options.prefix ?? "clipguard:imgemb"}:${fingerprint}:${sha256}:${sampling}`;
  }

  async get(fingerprint: string, sha256: string, sampling: string): Promise<StoredEmbeddings | undefined> {
    const value = await this.redis.getBuffer(this.key(fingerprint, sha256, sampling));
    return value === null ? undefined : decodeEmbeddings(value);
  }

  async set(fingerprint: string, sha256: string, sampling: string, value: StoredEmbeddings): Promise<void> {
    const key = this.key(fingerprint, sha256, sampling);
    const bytes = encodeEmbeddings(value);
    if (this.options.ttlSeconds > 0) await this.redis.set(key, bytes, "EX", this.options.ttlSeconds);
    else await this.redis.set(key, bytes);
  }
}

/**
 * Whether `entry` can judge policies that want tiles (`wantTiles`) as a fresh embedding would:
 * always when none want tiles, else when the entry has its tiles or the image is too small to tile.
 */
export function entryServes(entry: StoredEmbeddings, wantTiles: boolean, inputSize: number, sampling: SamplingOptions): boolean {
  if (!wantTiles || entry.tiled) return true;
  return tileGrid(entry.width, entry.height, inputSize, sampling.tilesRatio, sampling.tilesMax).length === 0;
}
