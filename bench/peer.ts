/**
 * `peer`: what one would build without clipguard — transformers.js' zero-shot-image-classification
 * pipeline over the same model directory (its combined onnx/model.onnx), local files only, fp32
 * on the CPU with the same ORT intra-op thread count, called once per image with the prompts as
 * candidate labels (used verbatim: hypothesis_template "{}"). Each call runs the text tower for
 * every prompt as well as the image tower: that is the cost clipguard's cached prompt
 * embeddings avoid.
 */
import path from "node:path";
import { env, pipeline } from "@huggingface/transformers";
import type { BenchImage } from "./images.js";

export async function measurePeer(
  modelDir: string,
  runs: readonly { prompts: string[]; images: number }[],
  pool: readonly BenchImage[],
  options: { threads: number },
  progress: (line: string) => void,
): Promise<Record<string, number>> {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = `${path.dirname(modelDir)}${path.sep}`;
  const classifier = await pipeline("zero-shot-image-classification", path.basename(modelDir), {
    device: "cpu",
    dtype: "fp32",
    session_options: { intraOpNumThreads: options.threads, interOpNumThreads: 1, graphOptimizationLevel: "all" },
  });
  const result: Record<string, number> = {};
  try {
    for (const run of runs) {
      const classify = async (i: number) => {
        const output = await classifier(pool[i % pool.length]!.path, run.prompts, { hypothesis_template: "{}" });
        if (!Array.isArray(output) || output.length !== run.prompts.length) throw new Error("peer: unexpected pipeline output");
      };
      await classify(0); // warm-up
      const started = performance.now();
      for (let i = 0; i < run.images; i++) await classify(i);
      result[String(run.prompts.length)] = (run.images * 1000) / (performance.now() - started);
      progress(`peer: ${run.prompts.length} prompts: ${result[String(run.prompts.length)]!.toFixed(2)} images/s (${run.images} images)`);
    }
  } finally {
    await classifier.dispose();
  }
  return result;
}
