/**
 * The image tower of OpenAI CLIP ViT as an ONNX graph:
 * pixel_values float32 [batch, 3, H, W] → image_embeds float32 [batch, embedDim] (not normalized).
 */
import { layerNorm, type TowerGraph, transformerBlock, weight } from "./clip-graph-blocks.js";
import type { ClipWeights } from "./clip-weights.js";
import { attr, GraphBuilder } from "./graph-builder.js";

/**
 * Serialized vision model: Conv patch embedding (kernel = stride = patch, no bias), class token,
 * positional embedding, ln_pre, pre-LN blocks, ln_post on the class token, projection (no bias).
 */
export function buildVisionModel(weights: ClipWeights): Uint8Array {
  const { vision, embedDim } = weights.config;
  const g = new GraphBuilder("clip_vision", "CLIP ViT image tower with seeded random weights (clipguard tools)");
  const tower: TowerGraph = { graph: g, weights };
  const { imageSize: size, patchSize: patch, width } = vision;

  const pixels = g.addInput("pixel_values", "float32", ["batch", 3, size, size]);
  const grid = g.op("Conv", [pixels, weight(tower, "vision.patch_embed")], {
    kernel_shape: attr.ints([patch, patch]),
    strides: attr.ints([patch, patch]),
  });
  // [batch, width, g, g] → [batch, g·g, width], patches in row-major order like torch's flatten(2).
  const patchTokens = g.op("Transpose", [g.op("Reshape", [grid, g.constInt64([0, width, -1])])], {
    perm: attr.ints([0, 2, 1]),
  });

  const batch = g.op("Shape", [pixels], { start: attr.int(0), end: attr.int(1) });
  const classShape = g.op("Concat", [batch, g.constInt64([1, width])], { axis: attr.int(0) });
  const classTokens = g.op("Expand", [weight(tower, "vision.class_embed"), classShape]);
  const tokens = g.op("Concat", [classTokens, patchTokens], { axis: attr.int(1) });

  let x = g.op("Add", [tokens, weight(tower, "vision.pos_embed")]);
  x = layerNorm(tower, x, "vision.ln_pre");
  for (let i = 0; i < vision.layers; i++) {
    x = transformerBlock(tower, x, `vision.blocks.${i}`, width, vision.heads);
  }
  const classOut = g.op("Gather", [x, g.constInt64([0], [])], { axis: attr.int(1) });
  const pooled = layerNorm(tower, classOut, "vision.ln_post");
  const embeds = g.op("MatMul", [pooled, weight(tower, "vision.proj")]);
  g.addOutput("image_embeds", "float32", ["batch", embedDim], embeds);
  return g.toBytes();
}
