/** models/demo/README.md, generated so that it always lists the vocabulary the model really has. */
import {
  CONCEPT_NAMES,
  CONCEPT_WORDS,
  EMBED_DIM,
  IMAGE_GENERIC_WEIGHT,
  IMAGE_WORDS,
  NEUTRAL_WORDS,
  TOKEN_GENERIC_WEIGHT,
  vocabulary,
} from "./concepts.js";
import { DEMO_MODEL_NAME } from "./model-config-files.js";

export function readmeMarkdown(): string {
  const conceptRows = CONCEPT_NAMES.map((concept) => `| ${concept} | ${CONCEPT_WORDS[concept].join(", ")} |`);
  return `# ${DEMO_MODEL_NAME}: the clipguard demo model

**This is not a real CLIP and not a content-moderation model.** It is a tiny, *constructed*
(not trained) model that tells colours and brightness apart. It exists so that clipguard's demo,
tests and CI can run end to end in seconds, without downloading hundreds of megabytes. Do not use
it to moderate anything.

It has the same files and the same interface as a Hugging Face CLIP ONNX export:

| file | what it is |
| --- | --- |
| \`config.json\` | \`model_type: "clip"\`, \`projection_dim: ${EMBED_DIM}\`, and \`"clipguard_demo": true\` |
| \`preprocessor_config.json\` | exactly CLIP ViT's (resize 224, center crop, CLIP mean/std) |
| \`tokenizer.json\`, \`tokenizer_config.json\`, \`special_tokens_map.json\` | a whole-word tokenizer over ${vocabulary().length} tokens; \`<|startoftext|> … <|endoftext|>\` like CLIP |
| \`onnx/vision_model.onnx\` | \`pixel_values\` float32 [batch, 3, 224, 224] → \`image_embeds\` float32 [batch, ${EMBED_DIM}] |
| \`onnx/text_model.onnx\` | \`input_ids\` int64 [batch, sequence] → \`text_embeds\` float32 [batch, ${EMBED_DIM}] |

Embeddings are not normalized, as in CLIP exports; compare them by cosine similarity.

## What it sees

The image tower undoes CLIP's normalization and measures, per pixel, how strongly each of six
concepts is present, then averages over the image:

- **red, green, blue, yellow**: how much one colour dominates (e.g. red = max(0, min(r−g, r−b)));
- **dark**: luminance below 0.35; **bright**: luminance above 0.65.

Each concept is a fixed direction in the ${EMBED_DIM}-dimensional space. Every image also gets a small
generic "this is an image" component (weight ${IMAGE_GENERIC_WEIGHT}), so that a gray picture still has an
embedding.

The text tower adds up the directions of the words in the prompt, up to the first
\`<|endoftext|>\` (so padding after it changes nothing, as in CLIP). The start token and image
words add the generic component (${TOKEN_GENERIC_WEIGHT} each). All other words count for nothing.

| concept | words |
| --- | --- |
${conceptRows.join("\n")}
| generic | ${IMAGE_WORDS.join(", ")} |

Known words with no meaning: ${NEUTRAL_WORDS.join(", ")}. Any other word is \`[UNK]\` and means
nothing either. The model cannot read negation or word order: "not red" means "red".

So "a mostly red image" scores a solid red image at a cosine of about 1.0, a gray one at about
0.45 and a blue one below 0.2.

## Using a real CLIP instead

Point clipguard at any CLIP export in the same Hugging Face ONNX layout (\`config.json\`,
\`preprocessor_config.json\`, \`tokenizer.json\`, \`onnx/vision_model.onnx\` giving \`image_embeds\`,
\`onnx/text_model.onnx\` giving \`text_embeds\`) with \`--model DIR\`.

## Regenerating

This directory is generated; do not edit it by hand. \`npm run generate:demo-model\` rewrites it
byte for byte from \`tools/demo-model/\`, and \`test/demo-model-graphs.test.ts\` fails when the
committed files and the generator disagree.
`;
}
