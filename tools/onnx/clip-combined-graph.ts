/**
 * The combined CLIP graph that Hugging Face exports as `onnx/model.onnx` (what transformers.js'
 * `CLIPModel` and its `zero-shot-image-classification` pipeline load):
 *
 *   input_ids int64 [text_batch, sequence], pixel_values float32 [image_batch, 3, H, W]
 *   (+ attention_mask int64 [text_batch, sequence] when the text tower declares it)
 *   → logits_per_image [image_batch, text_batch], logits_per_text [text_batch, image_batch],
 *     text_embeds [text_batch, dim], image_embeds [image_batch, dim] (both L2-normalized),
 *   logits = exp(logit_scale) · cosine similarity.
 *
 * It is spliced together from the two serialized towers of clip-vision-graph.ts and
 * clip-text-graph.ts rather than rebuilt, so the three files share one definition of the
 * architecture (and the generator serializes the big weights only once per tower).
 */
import onnxProto from "onnx-proto";
import { attr, GraphBuilder, IR_VERSION, OPSET_VERSION, PRODUCER_NAME } from "./graph-builder.js";

const { onnx } = onnxProto;

/** ln(100): trained CLIP ViT-B/32's logit scale (exp gives the 100 used in its zero-shot softmax). */
export const CLIP_LOGIT_SCALE = Math.log(100);

export interface CombinedModelOptions {
  /** The logit scale before exp(). @default ln(100) */
  logitScale?: number;
}

type Graph = onnxProto.onnx.IGraphProto;

/**
 * Prefixes every value and node name of a tower except its graph inputs (shared with the combined
 * graph) and its named weights (`vision.*` / `text.*`, already unique per tower), so that the
 * generated names of the two towers (`matmul_3`, `const_i_0`, …) cannot collide.
 */
function prefixNames(graph: Graph, prefix: string, keep: (name: string) => boolean): Graph {
  const rename = (name: string): string => (name === "" || keep(name) ? name : `${prefix}/${name}`);
  return {
    ...graph,
    node: (graph.node ?? []).map((node) => ({
      ...node,
      name: node.name ? `${prefix}/${node.name}` : node.name,
      input: (node.input ?? []).map(rename),
      output: (node.output ?? []).map(rename),
    })),
    initializer: (graph.initializer ?? []).map((tensor) => ({ ...tensor, name: rename(tensor.name ?? "") })),
    output: (graph.output ?? []).map((info) => ({ ...info, name: rename(info.name ?? "") })),
  };
}

/** A copy of a graph input with its symbolic dimensions renamed (e.g. batch → image_batch). */
function renameDims(info: onnxProto.onnx.IValueInfoProto, dims: Readonly<Record<string, string>>): onnxProto.onnx.IValueInfoProto {
  const shape = info.type?.tensorType?.shape;
  if (shape === undefined || shape === null) return info;
  return {
    ...info,
    type: {
      tensorType: {
        ...info.type?.tensorType,
        shape: { dim: (shape.dim ?? []).map((d) => (d.dimParam ? { dimParam: dims[d.dimParam] ?? d.dimParam } : d)) },
      },
    },
  };
}

function onlyOutput(graph: Graph, what: string): string {
  const outputs = graph.output ?? [];
  const name = outputs[0]?.name;
  if (outputs.length !== 1 || !name) throw new Error(`the ${what} tower must have exactly one output`);
  return name;
}

function input(graph: Graph, name: string): onnxProto.onnx.IValueInfoProto | undefined {
  return (graph.input ?? []).find((info) => info.name === name);
}

/** The head: normalize both embeddings, scaled cosine similarities both ways. */
function headGraph(imageEmbeds: string, textEmbeds: string, embedDim: number, logitScale: number): Graph {
  const g = new GraphBuilder("clip_head");
  g.addInput(imageEmbeds, "float32", ["image_batch", embedDim]);
  g.addInput(textEmbeds, "float32", ["text_batch", embedDim]);
  const normalize = (x: string): string =>
    g.op("Div", [x, g.op("ReduceL2", [x], { axes: attr.ints([-1]), keepdims: attr.int(1) })]);
  const image = normalize(imageEmbeds);
  const text = normalize(textEmbeds);
  const scale = g.op("Exp", [g.addFloatInitializer("logit_scale", [], [logitScale])]);
  const similarity = g.op("MatMul", [text, g.op("Transpose", [image], { perm: attr.ints([1, 0]) })]);
  const logitsPerText = g.op("Mul", [similarity, scale]);
  g.addOutput("logits_per_image", "float32", ["image_batch", "text_batch"], g.op("Transpose", [logitsPerText], { perm: attr.ints([1, 0]) }));
  g.addOutput("logits_per_text", "float32", ["text_batch", "image_batch"], logitsPerText);
  g.addOutput("text_embeds", "float32", ["text_batch", embedDim], text);
  g.addOutput("image_embeds", "float32", ["image_batch", embedDim], image);
  return onnx.ModelProto.decode(g.toBytes()).graph ?? {};
}

/**
 * Splices a serialized vision tower (pixel_values → image_embeds) and text tower (input_ids
 * [, attention_mask] → text_embeds), as written by buildVisionModel / buildTextModel, into the
 * combined CLIPModel graph described in the file header.
 */
export function combineClipTowers(visionModel: Uint8Array, textModel: Uint8Array, embedDim: number, options: CombinedModelOptions = {}): Uint8Array {
  const visionIn = onnx.ModelProto.decode(visionModel).graph ?? {};
  const textIn = onnx.ModelProto.decode(textModel).graph ?? {};
  const vision = prefixNames(visionIn, "vision", (n) => n === "pixel_values" || n.startsWith("vision."));
  const text = prefixNames(textIn, "text", (n) => n === "input_ids" || n === "attention_mask" || n.startsWith("text."));
  const head = headGraph(onlyOutput(vision, "vision"), onlyOutput(text, "text"), embedDim, options.logitScale ?? CLIP_LOGIT_SCALE);

  const ids = input(textIn, "input_ids");
  const pixels = input(visionIn, "pixel_values");
  const mask = input(textIn, "attention_mask");
  if (ids === undefined || pixels === undefined) throw new Error("the towers must take input_ids and pixel_values");
  const textDims = { batch: "text_batch" };
  const inputs = [renameDims(ids, textDims), renameDims(pixels, { batch: "image_batch" })];
  if (mask !== undefined) inputs.push(renameDims(mask, textDims));

  const model: onnxProto.onnx.IModelProto = {
    irVersion: IR_VERSION,
    opsetImport: [{ domain: "", version: OPSET_VERSION }],
    producerName: PRODUCER_NAME,
    producerVersion: "1",
    docString: "CLIP (both towers and the similarity head) with seeded random weights (clipguard tools)",
    graph: {
      name: "clip",
      node: [...(vision.node ?? []), ...(text.node ?? []), ...(head.node ?? [])],
      initializer: [...(vision.initializer ?? []), ...(text.initializer ?? []), ...(head.initializer ?? [])],
      input: inputs,
      output: head.output ?? [],
    },
  };
  return onnx.ModelProto.encode(model).finish();
}
