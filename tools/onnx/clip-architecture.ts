/**
 * A CLIP of configurable size with seeded random weights, as ONNX models: the entry point for
 * tools and tests. Everything is re-exported from the files that implement it.
 */
export {
  type ClipArchConfig,
  type ClipTextConfig,
  type ClipVisionConfig,
  type MacCount,
  multiplyAccumulates,
  validateClipConfig,
  VIT_B_32_CONFIG,
} from "./clip-config.js";
export { LAYER_NORM_EPSILON } from "./clip-graph-blocks.js";
export { buildTextModel, MASKED_SCORE } from "./clip-text-graph.js";
export { buildVisionModel } from "./clip-vision-graph.js";
export { clipTensorShapes, type ClipWeights, createClipWeights } from "./clip-weights.js";
