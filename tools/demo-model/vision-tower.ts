/**
 * The demo image tower: pixel_values float32 [batch, 3, 224, 224] (CLIP-normalized) →
 * image_embeds float32 [batch, EMBED_DIM]. Two 1×1 Conv+Relu layers compute, per pixel,
 *   red    = relu(min(r−g, r−b))      green  = relu(min(g−r, g−b))
 *   blue   = relu(min(b−r, b−g))      yellow = relu(min(r−b, g−b))
 *   dark   = relu(DARK − L)/DARK      bright = relu(L − BRIGHT)/(1 − BRIGHT)
 * using min(x, y) = x − relu(x − y) and x = relu(x) − relu(−x); GlobalAveragePool turns them into
 * image fractions, and the projection maps feature k to concept direction k, plus a constant
 * generic direction as the bias.
 */
import { attr, GraphBuilder } from "../onnx/graph-builder.js";
import {
  BRIGHT_LEVEL,
  CONCEPT_NAMES,
  conceptDirections,
  DARK_LEVEL,
  EMBED_DIM,
  GENERIC_INDEX,
  IMAGE_GENERIC_WEIGHT,
  LUMA,
} from "./concepts.js";

/** CLIP's normalization, undone inside the first convolution. */
export const CLIP_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711] as const;
export const IMAGE_SIZE = 224;

/** A first-layer unit: relu(a·rgb + c). */
interface RgbUnit {
  name: string;
  a: readonly [number, number, number];
  c: number;
}

const FIRST_LAYER: readonly RgbUnit[] = [
  { name: "r-g", a: [1, -1, 0], c: 0 },
  { name: "g-r", a: [-1, 1, 0], c: 0 },
  { name: "r-b", a: [1, 0, -1], c: 0 },
  { name: "b-r", a: [-1, 0, 1], c: 0 },
  { name: "g-b", a: [0, 1, -1], c: 0 },
  { name: "b-g", a: [0, -1, 1], c: 0 },
  { name: "dark", a: [-LUMA[0], -LUMA[1], -LUMA[2]], c: DARK_LEVEL },
  { name: "bright", a: [LUMA[0], LUMA[1], LUMA[2]], c: -BRIGHT_LEVEL },
];

/** Second layer, one row per concept: weights over the first-layer units (by name). */
const SECOND_LAYER: Readonly<Record<(typeof CONCEPT_NAMES)[number], Readonly<Record<string, number>>>> = {
  // min(r−g, r−b) = (r−g) − relu(b−g)
  red: { "r-g": 1, "g-r": -1, "b-g": -1 },
  // min(g−r, g−b) = (g−r) − relu(b−r)
  green: { "g-r": 1, "r-g": -1, "b-r": -1 },
  // min(b−r, b−g) = (b−r) − relu(g−r)
  blue: { "b-r": 1, "r-b": -1, "g-r": -1 },
  // min(r−b, g−b) = (r−b) − relu(r−g)
  yellow: { "r-b": 1, "b-r": -1, "r-g": -1 },
  dark: { dark: 1 / DARK_LEVEL },
  bright: { bright: 1 / (1 - BRIGHT_LEVEL) },
};

function firstLayerWeights(): { weight: number[]; bias: number[] } {
  const weight: number[] = [];
  const bias: number[] = [];
  for (const unit of FIRST_LAYER) {
    // a·rgb + c with rgb = x·std + mean  ⇒  weights a·std on x, bias a·mean + c.
    weight.push(...unit.a.map((a, ch) => a * (CLIP_IMAGE_STD[ch] ?? 0)));
    bias.push(unit.a.reduce((sum, a, ch) => sum + a * (CLIP_IMAGE_MEAN[ch] ?? 0), unit.c));
  }
  return { weight, bias };
}

function secondLayerWeights(): number[] {
  return CONCEPT_NAMES.flatMap((concept) => FIRST_LAYER.map((unit) => SECOND_LAYER[concept][unit.name] ?? 0));
}

/** Serialized vision_model.onnx. */
export function buildDemoVisionModel(): Uint8Array {
  const g = new GraphBuilder("demo_colour_clip_vision", "clipguard demo colour/brightness image tower (constructed, not trained)");
  const directions = conceptDirections();
  const first = firstLayerWeights();
  const units = FIRST_LAYER.length;
  const concepts = CONCEPT_NAMES.length;

  const pixels = g.addInput("pixel_values", "float32", ["batch", 3, IMAGE_SIZE, IMAGE_SIZE]);
  const differences = g.op("Relu", [
    g.op("Conv", [
      pixels,
      g.addFloatInitializer("rgb_units.weight", [units, 3, 1, 1], first.weight),
      g.addFloatInitializer("rgb_units.bias", [units], first.bias),
    ]),
  ]);
  const features = g.op("Relu", [
    g.op("Conv", [
      differences,
      g.addFloatInitializer("concept_features.weight", [concepts, units, 1, 1], secondLayerWeights()),
      g.addFloatInitializer("concept_features.bias", [concepts], new Array<number>(concepts).fill(0)),
    ]),
  ]);
  // Per-pixel features in [0, 1] → the fraction of the image that shows each concept.
  const fractions = g.op("Flatten", [g.op("GlobalAveragePool", [features])], { axis: attr.int(1) });
  const projection = directions.slice(0, concepts).flatMap((direction) => [...direction]);
  const generic = [...(directions[GENERIC_INDEX] ?? [])].map((x) => x * IMAGE_GENERIC_WEIGHT);
  const embeds = g.op("Add", [
    g.op("MatMul", [fractions, g.addFloatInitializer("projection.weight", [concepts, EMBED_DIM], projection)]),
    g.addFloatInitializer("projection.bias", [EMBED_DIM], generic),
  ]);
  g.addOutput("image_embeds", "float32", ["batch", EMBED_DIM], embeds);
  return g.toBytes();
}
