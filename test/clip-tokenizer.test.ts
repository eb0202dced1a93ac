import { readFile } from "node:fs/promises";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ClipTokenizer, type TokenBatch } from "../src/clip/clip-tokenizer.js";
import { openModelDirectory } from "../src/clip/model-dir.js";
import { CLIP_BOS, CLIP_EOS, CLIP_TOKENIZER_DIR } from "./support/tiny-clip-model.js";

const CONTEXT = 77;

async function readJsonObject(file: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path.join(CLIP_TOKENIZER_DIR, file), "utf8")) as Record<string, unknown>;
}

/** Rows of a padded batch as plain numbers: [ids, mask] per text. */
function batchRows(batch: TokenBatch): { ids: number[]; mask: number[] }[] {
  return Array.from({ length: batch.batch }, (_, b) => {
    const start = b * batch.sequence;
    return {
      ids: Array.from(batch.ids.subarray(start, start + batch.sequence), Number),
      mask: Array.from(batch.attentionMask.subarray(start, start + batch.sequence), Number),
    };
  });
}

describe("ClipTokenizer with the real CLIP ViT-B/32 tokenizer files", () => {
  let tokenizer: ClipTokenizer;
  /** The same files without truncation, to see what truncation removed. */
  let untruncated: ClipTokenizer;
  let tokenizerConfig: Record<string, unknown>;

  beforeAll(async () => {
    const [tokenizerJson, config, specialTokens] = await Promise.all([
      readJsonObject("tokenizer.json"),
      readJsonObject("tokenizer_config.json"),
      readJsonObject("special_tokens_map.json"),
    ]);
    tokenizerConfig = config;
    tokenizer = ClipTokenizer.fromJson(tokenizerJson, config, specialTokens, CONTEXT);
    untruncated = ClipTokenizer.fromJson(tokenizerJson, config, specialTokens, 4096);
  });

  it.each([
    ["a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407]],
    ["A photo of  a CAT!", [49406, 320, 1125, 539, 320, 2368, 256, 49407]],
    ["graphic violence, blood and gore", [49406, 4245, 5450, 267, 3590, 537, 17872, 49407]],
  ])("encodes %j as CLIP does", (text, expected) => {
    expect(tokenizer.encode(text)).toEqual(expected);
  });

  it("gives an empty prompt just the start and end tokens", () => {
    expect(tokenizer.encode("")).toEqual([CLIP_BOS, CLIP_EOS]);
  });

  it("truncates a long prompt to 77 tokens, keeping the first 76 and ending with <|endoftext|>", () => {
    const words = Array.from({ length: 120 }, (_, i) => `word${i}`).join(" ");
    const full = untruncated.encode(words);
    expect(full.length).toBeGreaterThan(CONTEXT);

    const ids = tokenizer.encode(words);
    expect(ids).toHaveLength(CONTEXT);
    expect(ids.at(-1)).toBe(CLIP_EOS);
    expect(ids.slice(0, CONTEXT - 1)).toEqual(full.slice(0, CONTEXT - 1));
    // CLIP pools at the first <|endoftext|>: there must be no other one before the last position
    expect(ids.indexOf(CLIP_EOS)).toBe(CONTEXT - 1);
  });

  it("leaves a prompt of exactly 77 tokens as it is", () => {
    const text = Array.from({ length: CONTEXT - 2 }, () => "cat").join(" ");
    const full = untruncated.encode(text);
    expect(full).toHaveLength(CONTEXT);
    expect(tokenizer.encode(text)).toEqual(full);
  });

  it("pads a batch with the pad token of tokenizer_config.json, with a matching attention mask", () => {
    // CLIP's tokenizer_config.json names <|endoftext|> as pad_token (id 49407), not "!" (id 0)
    expect(tokenizerConfig["pad_token"]).toBe("<|endoftext|>");
    expect(tokenizer.padId).toBe(CLIP_EOS);

    const batch = tokenizer.encodeBatch(["a cat", "a photo of a cat", ""]);
    expect(batch.batch).toBe(3);
    expect(batch.sequence).toBe(7);
    expect(batch.ids).toHaveLength(21);
    expect(batch.attentionMask).toHaveLength(21);
    expect(batchRows(batch)).toEqual([
      { ids: [49406, 320, 2368, 49407, 49407, 49407, 49407], mask: [1, 1, 1, 1, 0, 0, 0] },
      { ids: [49406, 320, 1125, 539, 320, 2368, 49407], mask: [1, 1, 1, 1, 1, 1, 1] },
      { ids: [49406, 49407, 49407, 49407, 49407, 49407, 49407], mask: [1, 1, 0, 0, 0, 0, 0] },
    ]);
  });

  it("pads a batch holding a long prompt to the context length and no further", () => {
    const long = Array.from({ length: 200 }, () => "cat").join(" ");
    const batch = tokenizer.encodeBatch([long, "a cat"]);
    expect(batch.sequence).toBe(CONTEXT);
    const [first, second] = batchRows(batch);
    expect(first?.ids.at(-1)).toBe(CLIP_EOS);
    expect(first?.mask.every((m) => m === 1)).toBe(true);
    expect(second?.ids.slice(0, 4)).toEqual([49406, 320, 2368, 49407]);
    expect(second?.mask.reduce((sum, m) => sum + m, 0)).toBe(4);
  });
});

describe("ClipTokenizer with the demo model's tokenizer", () => {
  let tokenizer: ClipTokenizer;
  let vocab: Record<string, number>;
  let unkId: number;

  beforeAll(async () => {
    const directory = await openModelDirectory("models/demo");
    tokenizer = ClipTokenizer.fromModelDirectory(directory);
    const model = (directory.tokenizerJson as { model: { vocab: Record<string, number>; unk_token: string } }).model;
    vocab = model.vocab;
    const unk = vocab[model.unk_token];
    if (unk === undefined) throw new Error("the demo tokenizer has no unk token in its vocabulary");
    unkId = unk;
  });

  const id = (token: string): number => {
    const value = vocab[token];
    if (value === undefined) throw new Error(`no ${token} in the demo vocabulary`);
    return value;
  };

  it("reads the context length, end-of-text and pad tokens from the model directory", () => {
    expect(tokenizer.contextLength).toBe(77);
    expect(tokenizer.eosId).toBe(id("<|endoftext|>"));
    expect(tokenizer.padId).toBe(id("<|endoftext|>"));
  });

  it("encodes known words, case-insensitively, between the start and end tokens", () => {
    expect(tokenizer.encode("A mostly RED image")).toEqual([
      id("<|startoftext|>"),
      id("a"),
      id("mostly"),
      id("red"),
      id("image"),
      id("<|endoftext|>"),
    ]);
  });

  it("maps unknown words to its unk id", () => {
    expect(unkId).toBe(111);
    expect(tokenizer.encode("a purple elephant")).toEqual([id("<|startoftext|>"), id("a"), unkId, unkId, id("<|endoftext|>")]);
  });

  it("truncates to 77 with <|endoftext|> last", () => {
    const ids = tokenizer.encode(Array.from({ length: 100 }, () => "red").join(" "));
    expect(ids).toHaveLength(77);
    expect(ids[0]).toBe(id("<|startoftext|>"));
    expect(ids.slice(1, 76).every((t) => t === id("red"))).toBe(true);
    expect(ids[76]).toBe(id("<|endoftext|>"));
  });
});
