/**
 * `bare`: the ceiling. A tight loop of image-tower runs on ready-made pixel tensors, per batch
 * size, with the engine's own session settings (it goes through src/clip/onnx-towers.ts'
 * VisionTower, so it follows any change there) and ORT intra-op threads = cores.
 */
import path from "node:path";
import { VisionTower } from "../src/clip/onnx-towers.js";

export interface BareResult {
  bestBatch: number;
  imagesPerSecond: number;
  /** Batch size → images/s. */
  perBatch: Record<string, number>;
  /** Batch size → CPU seconds per wall second of this process (ORT's threads included). */
  cpuCores: Record<string, number>;
}

/** Deterministic CLIP-normalized-looking values in [-2, 2]; the values do not change the speed. */
function pixelBatch(count: number, size: number): Float32Array {
  const pixels = new Float32Array(count * 3 * size * size);
  let state = 12345;
  for (let i = 0; i < pixels.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    pixels[i] = (state / 4294967296) * 4 - 2;
  }
  return pixels;
}

export async function measureBare(
  modelDir: string,
  imageSize: number,
  options: { batchSizes: number[]; windowMs: number; threads: number },
  progress: (line: string) => void,
): Promise<BareResult> {
  const tower = await VisionTower.load(path.join(modelDir, "onnx", "vision_model.onnx"), { intraOpThreads: options.threads }, { height: imageSize, width: imageSize });
  const perBatch: Record<string, number> = {};
  const cpuCores: Record<string, number> = {};
  try {
    for (const batch of options.batchSizes) {
      const pixels = pixelBatch(batch, imageSize);
      await tower.run(pixels, batch, imageSize, imageSize); // warm-up: first-run allocations
      let runs = 0;
      const cpuBefore = process.cpuUsage();
      const started = performance.now();
      let elapsed = 0;
      while (runs < 1 || elapsed < options.windowMs) {
        await tower.run(pixels, batch, imageSize, imageSize);
        runs++;
        elapsed = performance.now() - started;
      }
      perBatch[String(batch)] = (runs * batch * 1000) / elapsed;
      const cpu = process.cpuUsage(cpuBefore);
      cpuCores[String(batch)] = (cpu.user + cpu.system) / 1000 / elapsed;
      progress(`bare: batch ${batch}: ${perBatch[String(batch)]!.toFixed(2)} images/s (${runs} runs)`);
    }
  } finally {
    await tower.release();
  }
  const [bestBatch, imagesPerSecond] = Object.entries(perBatch).reduce((best, entry) => (entry[1] > best[1] ? entry : best));
  return { bestBatch: Number(bestBatch), imagesPerSecond, perBatch, cpuCores };
}
