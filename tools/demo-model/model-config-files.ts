/** config.json and preprocessor_config.json of the demo model, in the Hugging Face CLIP layout. */
import { CONCEPT_NAMES, EMBED_DIM, END_TOKEN, START_TOKEN, tokenId, vocabulary } from "./concepts.js";
import { MODEL_MAX_LENGTH } from "./tokenizer-files.js";
import { CLIP_IMAGE_MEAN, CLIP_IMAGE_STD, IMAGE_SIZE } from "./vision-tower.js";

export const DEMO_MODEL_NAME = "clipguard/demo-colour-clip";

/** config.json: the fields CLIP loaders read, plus clipguard's marker that this is the demo. */
export function modelConfigJson(): Record<string, unknown> {
  return {
    _name_or_path: DEMO_MODEL_NAME,
    model_type: "clip",
    projection_dim: EMBED_DIM,
    clipguard_demo: true,
    clipguard_demo_note:
      "Constructed (not trained) colour/brightness model for demos and tests. It is not a content-moderation model.",
    clipguard_demo_concepts: [...CONCEPT_NAMES],
    text_config: {
      model_type: "clip_text_model",
      vocab_size: vocabulary().length,
      max_position_embeddings: MODEL_MAX_LENGTH,
      hidden_size: EMBED_DIM,
      projection_dim: EMBED_DIM,
      bos_token_id: tokenId(START_TOKEN),
      eos_token_id: tokenId(END_TOKEN),
      pad_token_id: tokenId(END_TOKEN),
    },
    vision_config: {
      model_type: "clip_vision_model",
      image_size: IMAGE_SIZE,
      num_channels: 3,
      hidden_size: CONCEPT_NAMES.length,
      projection_dim: EMBED_DIM,
    },
  };
}

/** preprocessor_config.json: exactly CLIP ViT's, so real and demo models preprocess alike. */
export function preprocessorConfigJson(): Record<string, unknown> {
  return {
    crop_size: { height: IMAGE_SIZE, width: IMAGE_SIZE },
    do_center_crop: true,
    do_normalize: true,
    do_resize: true,
    do_rescale: true,
    rescale_factor: 0.00392156862745098,
    image_mean: [...CLIP_IMAGE_MEAN],
    image_std: [...CLIP_IMAGE_STD],
    resample: 3,
    size: { shortest_edge: IMAGE_SIZE },
    image_processor_type: "CLIPImageProcessor",
    do_convert_rgb: true,
  };
}
