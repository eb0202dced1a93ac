/** Every file of the demo model directory, and writing them out. */
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { modelConfigJson, preprocessorConfigJson } from "./model-config-files.js";
import { readmeMarkdown } from "./readme.js";
import { buildDemoTextModel } from "./text-tower.js";
import { specialTokensMapJson, tokenizerConfigJson, tokenizerJson } from "./tokenizer-files.js";
import { buildDemoVisionModel } from "./vision-tower.js";

function json(value: unknown): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(value, null, 2)}\n`);
}

/** Relative path (with "/") → contents. The same on every run and every machine. */
export function demoModelFiles(): Map<string, Uint8Array> {
  return new Map<string, Uint8Array>([
    ["README.md", new TextEncoder().encode(readmeMarkdown())],
    ["config.json", json(modelConfigJson())],
    ["preprocessor_config.json", json(preprocessorConfigJson())],
    ["tokenizer.json", json(tokenizerJson())],
    ["tokenizer_config.json", json(tokenizerConfigJson())],
    ["special_tokens_map.json", json(specialTokensMapJson())],
    ["onnx/vision_model.onnx", buildDemoVisionModel()],
    ["onnx/text_model.onnx", buildDemoTextModel()],
  ]);
}

/** Writes the demo model into `directory` (created if missing); returns the paths written. */
export async function writeDemoModel(directory: string): Promise<string[]> {
  const written: string[] = [];
  for (const [relative, contents] of demoModelFiles()) {
    const path = join(directory, ...relative.split("/"));
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, contents);
    written.push(path);
  }
  return written;
}
