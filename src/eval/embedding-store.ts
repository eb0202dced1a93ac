/**
 * Image embeddings kept on disk between `clipguard eval` runs, so that changing a prompt and
 * evaluating again only runs the text tower: `<dir>/<model fingerprint>/<sha256 of the bytes>.f32`,
 * raw little-endian float32. The fingerprint covers the ONNX files and the preprocessing config, so
 * an entry can only be reused by the model that wrote it.
 */
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { ClipguardError } from "../shared/errors.js";

const SHA256 = /^[0-9a-f]{64}$/;
const FINGERPRINT = /^[0-9A-Za-z_-]{1,128}$/;

export class EmbeddingStore {
  constructor(
    /** The cache root; created on the first write. */
    readonly dir: string,
    private readonly fingerprint: string,
  ) {
    // both become path segments: refuse anything that could climb out of `dir`
    if (!FINGERPRINT.test(fingerprint)) throw new ClipguardError("CLIPGUARD_E_INTERNAL", `unexpected model fingerprint ${JSON.stringify(fingerprint)}`);
  }

  private file(sha256: string): string {
    if (!SHA256.test(sha256)) throw new ClipguardError("CLIPGUARD_E_INTERNAL", `unexpected sha256 ${JSON.stringify(sha256)}`);
    return path.join(this.dir, this.fingerprint, `${sha256}.f32`);
  }

  /**
   * The stored embedding, or `undefined` when there is none or it is unusable (wrong length, not
   * finite): a damaged entry costs one inference, never a wrong score.
   */
  async get(sha256: string, dimension?: number): Promise<Float32Array | undefined> {
    const file = this.file(sha256);
    let bytes: Buffer;
    try {
      bytes = await fs.readFile(file);
    } catch {
      return undefined;
    }
    if (bytes.length === 0 || bytes.length % 4 !== 0) return undefined;
    const values = new Float32Array(bytes.length / 4);
    for (let i = 0; i < values.length; i++) values[i] = bytes.readFloatLE(i * 4);
    if (dimension !== undefined && values.length !== dimension) return undefined;
    if (!values.every(Number.isFinite)) return undefined;
    return values;
  }

  /** Stores an embedding atomically (write to a temp file, rename), so readers never see half of one. */
  async set(sha256: string, embedding: Float32Array): Promise<void> {
    const target = this.file(sha256);
    const bytes = Buffer.alloc(embedding.length * 4);
    embedding.forEach((v, i) => bytes.writeFloatLE(v, i * 4));
    try {
      await fs.mkdir(path.dirname(target), { recursive: true });
      const temp = `${target}.${randomUUID()}.tmp`;
      await fs.writeFile(temp, bytes);
      await fs.rename(temp, target);
    } catch (err) {
      throw new ClipguardError("CLIPGUARD_E_CONFIG", `cannot write the embedding cache ${this.dir}: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      });
    }
  }
}
