/**
 * tokenizer.json, tokenizer_config.json and special_tokens_map.json for the demo model: a
 * WordPiece tokenizer over whole words (no subword pieces, so an unknown word is one [UNK]),
 * lowercasing, BERT-style whitespace/punctuation splitting, and a template that wraps every text
 * in <|startoftext|> … <|endoftext|> like CLIP. Padding uses <|endoftext|>, also like CLIP.
 */
import { END_TOKEN, START_TOKEN, tokenId, UNKNOWN_TOKEN, vocabulary } from "./concepts.js";

/** CLIP's context length; the demo text tower accepts any length, the tokenizer config says 77. */
export const MODEL_MAX_LENGTH = 77;

function addedToken(content: string): Record<string, unknown> {
  return { id: tokenId(content), content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

function specialTokenEntry(content: string): Record<string, unknown> {
  return { id: content, ids: [tokenId(content)], tokens: [content] };
}

/** The tokenizer.json object (Hugging Face tokenizers format). */
export function tokenizerJson(): Record<string, unknown> {
  const vocab = Object.fromEntries(vocabulary().map(({ token }, id) => [token, id]));
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [UNKNOWN_TOKEN, START_TOKEN, END_TOKEN].map(addedToken),
    normalizer: { type: "Sequence", normalizers: [{ type: "NFC" }, { type: "Lowercase" }] },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [
        { SpecialToken: { id: START_TOKEN, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: END_TOKEN, type_id: 0 } },
      ],
      pair: [
        { SpecialToken: { id: START_TOKEN, type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: END_TOKEN, type_id: 0 } },
        { Sequence: { id: "B", type_id: 0 } },
        { SpecialToken: { id: END_TOKEN, type_id: 0 } },
      ],
      special_tokens: {
        [START_TOKEN]: specialTokenEntry(START_TOKEN),
        [END_TOKEN]: specialTokenEntry(END_TOKEN),
      },
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: {
      type: "WordPiece",
      unk_token: UNKNOWN_TOKEN,
      continuing_subword_prefix: "##",
      max_input_chars_per_word: 100,
      vocab,
    },
  };
}

/** tokenizer_config.json. The class is the generic fast tokenizer: this is not CLIP's BPE. */
export function tokenizerConfigJson(): Record<string, unknown> {
  return {
    tokenizer_class: "PreTrainedTokenizerFast",
    model_max_length: MODEL_MAX_LENGTH,
    do_lower_case: true,
    bos_token: START_TOKEN,
    eos_token: END_TOKEN,
    pad_token: END_TOKEN,
    unk_token: UNKNOWN_TOKEN,
    clean_up_tokenization_spaces: true,
  };
}

function specialTokenObject(content: string): Record<string, unknown> {
  return { content, lstrip: false, normalized: false, rstrip: false, single_word: false };
}

/** special_tokens_map.json. */
export function specialTokensMapJson(): Record<string, unknown> {
  return {
    bos_token: specialTokenObject(START_TOKEN),
    eos_token: specialTokenObject(END_TOKEN),
    pad_token: specialTokenObject(END_TOKEN),
    unk_token: specialTokenObject(UNKNOWN_TOKEN),
  };
}
