/**
 * The demo text tower: input_ids int64 [batch, sequence] → text_embeds float32 [batch, EMBED_DIM].
 * Each token embeds to its concept direction (image words and the start token to a small generic
 * component, everything else to zero), and the embeddings of the tokens up to and including the
 * first end-of-text token are summed. Whatever follows that token is ignored, as in CLIP, so
 * padding with any id changes nothing.
 */
import { attr, GraphBuilder } from "../onnx/graph-builder.js";
import {
  CONCEPT_NAMES,
  conceptDirections,
  EMBED_DIM,
  END_TOKEN,
  GENERIC_INDEX,
  TOKEN_GENERIC_WEIGHT,
  tokenId,
  vocabulary,
} from "./concepts.js";

const ONNX_FLOAT = 1;

/** [vocabulary size, EMBED_DIM] embedding table, row-major. */
export function tokenEmbeddingTable(): Float32Array {
  const directions = conceptDirections();
  const entries = vocabulary();
  const table = new Float32Array(entries.length * EMBED_DIM);
  entries.forEach(({ concept }, id) => {
    if (concept === "none") return;
    const index = concept === "generic" ? GENERIC_INDEX : CONCEPT_NAMES.indexOf(concept);
    const scale = concept === "generic" ? TOKEN_GENERIC_WEIGHT : 1;
    const direction = directions[index] ?? new Float64Array(EMBED_DIM);
    for (let d = 0; d < EMBED_DIM; d++) table[id * EMBED_DIM + d] = (direction[d] ?? 0) * scale;
  });
  return table;
}

/** Serialized text_model.onnx. */
export function buildDemoTextModel(): Uint8Array {
  const g = new GraphBuilder("demo_colour_clip_text", "clipguard demo colour/brightness text tower (constructed, not trained)");
  const vocabularySize = vocabulary().length;

  const ids = g.addInput("input_ids", "int64", ["batch", "sequence"]);
  const table = g.addFloatInitializer("token_embedding.weight", [vocabularySize, EMBED_DIM], tokenEmbeddingTable());
  const tokens = g.op("Gather", [table, ids], { axis: attr.int(0) });

  // keep[t] = 1 while no end-of-text token occurs strictly before t (an exclusive running count).
  const isEnd = g.op("Cast", [g.op("Equal", [ids, g.constInt64([tokenId(END_TOKEN)], [])])], { to: attr.int(ONNX_FLOAT) });
  const endsBefore = g.op("CumSum", [isEnd, g.constInt64([1], [])], { exclusive: attr.int(1) });
  const keep = g.op("Cast", [g.op("Less", [endsBefore, g.constFloat([0.5])])], { to: attr.int(ONNX_FLOAT) });
  const kept = g.op("Mul", [tokens, g.op("Unsqueeze", [keep, g.constInt64([2])])]);
  const embeds = g.op("ReduceSum", [kept, g.constInt64([1])], { keepdims: attr.int(0) });
  g.addOutput("text_embeds", "float32", ["batch", EMBED_DIM], embeds);
  return g.toBytes();
}
