import * as ort from "onnxruntime-node";
import { ClipguardError } from "../shared/errors.js";
import type { TokenBatch } from "./clip-tokenizer.js";

/** ONNX Runtime thread settings for the two towers. */
export interface SessionOptions {
  /** Threads one `run` may use (ORT intra-op). @default the CPU count */
  intraOpThreads: number;
}

/** Scales a vector to unit length in place and returns it; a zero vector stays zero. */
export function l2normalizeInPlace(v: Float32Array): Float32Array {
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += (v[i] ?? 0) * (v[i] ?? 0);
  const norm = Math.sqrt(sum);
  if (norm > 0) for (let i = 0; i < v.length; i++) v[i] = (v[i] ?? 0) / norm;
  return v;
}

function pickName(names: readonly string[], preferred: string, file: string, what: string, fallbackToOnly: boolean): string {
  if (names.includes(preferred)) return preferred;
  if (fallbackToOnly && names.length === 1 && names[0] !== undefined) return names[0];
  throw new ClipguardError("CLIPGUARD_E_MODEL", `${file}: expected ${what} named "${preferred}"; the graph has ${names.map((n) => `"${n}"`).join(", ") || "none"}`);
}

async function createSession(file: string, options: SessionOptions): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(file, {
      intraOpNumThreads: options.intraOpThreads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: "all",
    });
  } catch (err) {
    throw new ClipguardError("CLIPGUARD_E_MODEL", `${file}: ONNX Runtime cannot load it (${(err as Error).message})`, { cause: err });
  }
}

/** Splits a [batch, dim] output into one L2-normalized embedding per row. */
function rows(tensor: ort.Tensor | undefined, batch: number, file: string, output: string): Float32Array[] {
  if (tensor === undefined || tensor.type !== "float32" || tensor.dims.length !== 2 || tensor.dims[0] !== batch) {
    throw new ClipguardError("CLIPGUARD_E_MODEL", `${file}: output "${output}" should be float32 [batch, dim], got ${tensor?.type ?? "nothing"} [${tensor?.dims.join(", ") ?? ""}]`);
  }
  const data = tensor.data as Float32Array;
  const dim = tensor.dims[1] ?? 0;
  const out: Float32Array[] = [];
  for (let b = 0; b < batch; b++) out.push(l2normalizeInPlace(data.slice(b * dim, (b + 1) * dim)));
  return out;
}

/** Refuses an image input whose declared [batch, 3, H, W] shape fixes a size other than `crop`. */
function checkImageSize(session: ort.InferenceSession, input: string, crop: { height: number; width: number }, file: string): void {
  const meta = session.inputMetadata.find((m) => m.name === input);
  if (meta === undefined || !meta.isTensor || meta.shape.length !== 4) return;
  const [, , height, width] = meta.shape;
  const fixedOther = (dim: number | string | undefined, expected: number) => typeof dim === "number" && dim > 0 && dim !== expected;
  if (fixedOther(height, crop.height) || fixedOther(width, crop.width)) {
    throw new ClipguardError(
      "CLIPGUARD_E_MODEL",
      `${file}: input "${input}" takes ${String(height)}x${String(width)} images, but preprocessor_config.json crops to ` +
        `${crop.height}x${crop.width}; expected the preprocessor_config.json exported with this model`,
    );
  }
}

/** The image tower: pixel_values float32 [batch, 3, H, W] → image_embeds [batch, dim]. */
export class VisionTower {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly file: string,
    private readonly inputName: string,
    private readonly outputName: string,
  ) {}

  /**
   * @param crop the preprocessor's output size; a graph that fixes another height or width is
   *   refused here, rather than failing every image at inference time
   */
  static async load(file: string, options: SessionOptions, crop?: { height: number; width: number }): Promise<VisionTower> {
    const session = await createSession(file, options);
    try {
      const input = pickName(session.inputNames, "pixel_values", file, "an input", true);
      const output = pickName(session.outputNames, "image_embeds", file, "an output", false);
      if (crop !== undefined) checkImageSize(session, input, crop, file);
      return new VisionTower(session, file, input, output);
    } catch (err) {
      await session.release();
      throw err;
    }
  }

  /** One L2-normalized embedding per image; `pixels` holds `count` CHW images of `size`×`size`. */
  async run(pixels: Float32Array, count: number, height: number, width: number): Promise<Float32Array[]> {
    if (pixels.length !== count * 3 * height * width) {
      // a caller's bug, not a model fault: ort.Tensor would throw a bare Error without a code
      throw new ClipguardError("CLIPGUARD_E_INTERNAL", `${this.file}: ${pixels.length} pixel values are not ${count} images of 3x${height}x${width}`);
    }
    const input = new ort.Tensor("float32", pixels, [count, 3, height, width]);
    let result: ort.InferenceSession.ReturnType;
    try {
      result = await this.session.run({ [this.inputName]: input });
    } catch (err) {
      throw new ClipguardError("CLIPGUARD_E_INFERENCE", `${this.file}: inference failed (${(err as Error).message})`, { cause: err });
    }
    return rows(result[this.outputName], count, this.file, this.outputName);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** The text tower: input_ids int64 [batch, seq] (+ attention_mask when declared) → text_embeds [batch, dim]. */
export class TextTower {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly file: string,
    private readonly idsName: string,
    private readonly maskName: string | undefined,
    private readonly outputName: string,
  ) {}

  static async load(file: string, options: SessionOptions): Promise<TextTower> {
    const session = await createSession(file, options);
    try {
      return TextTower.fromSession(session, file);
    } catch (err) {
      await session.release();
      throw err;
    }
  }

  private static fromSession(session: ort.InferenceSession, file: string): TextTower {
    const ids = pickName(session.inputNames, "input_ids", file, "an input", false);
    const mask = session.inputNames.includes("attention_mask") ? "attention_mask" : undefined;
    const unknown = session.inputNames.filter((n) => n !== ids && n !== mask);
    if (unknown.length > 0) {
      throw new ClipguardError("CLIPGUARD_E_MODEL", `${file}: unexpected inputs ${unknown.join(", ")}; a CLIP text tower takes input_ids (and optionally attention_mask)`);
    }
    const output = pickName(session.outputNames, "text_embeds", file, "an output", false);
    return new TextTower(session, file, ids, mask, output);
  }

  async run(tokens: TokenBatch): Promise<Float32Array[]> {
    const dims = [tokens.batch, tokens.sequence];
    const feeds: Record<string, ort.Tensor> = { [this.idsName]: new ort.Tensor("int64", tokens.ids, dims) };
    if (this.maskName !== undefined) feeds[this.maskName] = new ort.Tensor("int64", tokens.attentionMask, dims);
    let result: ort.InferenceSession.ReturnType;
    try {
      result = await this.session.run(feeds);
    } catch (err) {
      throw new ClipguardError("CLIPGUARD_E_INFERENCE", `${this.file}: inference failed (${(err as Error).message})`, { cause: err });
    }
    return rows(result[this.outputName], tokens.batch, this.file, this.outputName);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
