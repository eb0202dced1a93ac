import { ClipTokenizer } from "./clip-tokenizer.js";
import { openModelDirectory, type ModelDirectory } from "./model-dir.js";
import { modelFingerprint } from "./model-fingerprint.js";
import { TextTower, VisionTower, type SessionOptions } from "./onnx-towers.js";
import { parsePreprocessorConfig } from "./preprocess.js";
import type { ImageEmbedder, PreprocessConfig, TextEmbedder } from "./types.js";

export interface ClipModelOptions extends Partial<SessionOptions> {
  /** Which ONNX files to load: `fp32` → `*_model.onnx`, otherwise `*_model_VARIANT.onnx`. @default "fp32" */
  variant?: string;
}

/** What verdicts say about the model that judged them. */
export interface ModelInfo {
  name: string;
  fingerprint: string;
  variant: string;
}

/**
 * A loaded CLIP model: both towers, the tokenizer and the preprocessing settings.
 * `run` of onnxruntime-node occupies the calling thread; the worker keeps instances of this class
 * inside inference threads, and the CLI uses one directly.
 */
export class ClipModel implements TextEmbedder, ImageEmbedder {
  private constructor(
    readonly directory: ModelDirectory,
    readonly info: ModelInfo,
    readonly preprocess: PreprocessConfig,
    readonly tokenizer: ClipTokenizer,
    private readonly vision: VisionTower,
    private readonly text: TextTower,
  ) {}

  static async load(dir: string, options: ClipModelOptions = {}): Promise<ClipModel> {
    const directory = await openModelDirectory(dir, options.variant ?? "fp32");
    const preprocess = parsePreprocessorConfig(directory.preprocessorConfig);
    const tokenizer = ClipTokenizer.fromModelDirectory(directory);
    const sessionOptions: SessionOptions = { intraOpThreads: options.intraOpThreads ?? 1 };
    const crop = { height: preprocess.cropHeight, width: preprocess.cropWidth };
    const [vision, text, fingerprint] = await Promise.allSettled([
      VisionTower.load(directory.visionModelPath, sessionOptions, crop),
      TextTower.load(directory.textModelPath, sessionOptions),
      modelFingerprint(directory),
    ]);
    if (vision.status === "rejected" || text.status === "rejected" || fingerprint.status === "rejected") {
      // a tower that did load must not keep its native session alive
      await Promise.all([vision, text].map((s) => (s.status === "fulfilled" ? s.value.release() : undefined)));
      const failed = [vision, text, fingerprint].find((s): s is PromiseRejectedResult => s.status === "rejected");
      throw failed?.reason;
    }
    const info: ModelInfo = { name: directory.name, fingerprint: fingerprint.value, variant: directory.variant };
    return new ClipModel(directory, info, preprocess, tokenizer, vision.value, text.value);
  }

  get fingerprint(): string {
    return this.info.fingerprint;
  }

  /** One L2-normalized embedding per text. Callers batch; an empty list costs nothing. */
  async embedTexts(texts: readonly string[]): Promise<Float32Array[]> {
    if (texts.length === 0) return [];
    return this.text.run(this.tokenizer.encodeBatch(texts));
  }

  /** One L2-normalized embedding per preprocessed image (CHW float32 at the crop size). */
  async embedPixels(pixels: Float32Array, count: number): Promise<Float32Array[]> {
    if (count === 0) return [];
    return this.vision.run(pixels, count, this.preprocess.cropHeight, this.preprocess.cropWidth);
  }

  async release(): Promise<void> {
    await Promise.all([this.vision.release(), this.text.release()]);
  }
}
