import { Tokenizer } from "@huggingface/tokenizers";
import { ClipguardError } from "../shared/errors.js";
import type { ModelDirectory } from "./model-dir.js";

/** A batch of token ids, padded to the longest text, ready for the text tower. */
export interface TokenBatch {
  ids: BigInt64Array;
  attentionMask: BigInt64Array;
  batch: number;
  sequence: number;
}

function tokenContent(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "object" && value !== null) {
    const content = (value as Record<string, unknown>)["content"];
    if (typeof content === "string") return content;
  }
  return undefined;
}

/**
 * The model's own tokenizer (its tokenizer.json, read by @huggingface/tokenizers), with CLIP's
 * truncation and padding rules: at most `contextLength` tokens with the end-of-text token kept
 * last, and batches padded with the pad token. CLIP pools at the first end-of-text token, so the
 * padding never changes an embedding.
 */
export class ClipTokenizer {
  readonly eosId: number;
  readonly padId: number;

  private constructor(
    private readonly tokenizer: Tokenizer,
    readonly contextLength: number,
    eosId: number,
    padId: number,
  ) {
    this.eosId = eosId;
    this.padId = padId;
  }

  static fromModelDirectory(model: ModelDirectory): ClipTokenizer {
    return ClipTokenizer.fromJson(model.tokenizerJson, model.tokenizerConfig, model.specialTokensMap, model.contextLength, model.tokenizerPath);
  }

  static fromJson(
    tokenizerJson: unknown,
    tokenizerConfig: Record<string, unknown>,
    specialTokensMap: Record<string, unknown>,
    contextLength: number,
    source = "tokenizer.json",
  ): ClipTokenizer {
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tokenizerJson as object, tokenizerConfig);
    } catch (err) {
      throw new ClipguardError("CLIPGUARD_E_MODEL", `${source}: not a tokenizer that @huggingface/tokenizers can load (${(err as Error).message})`, { cause: err });
    }
    const eosToken =
      tokenContent(tokenizerConfig["eos_token"]) ?? tokenContent(specialTokensMap["eos_token"]) ?? "<|endoftext|>";
    const padToken = tokenContent(tokenizerConfig["pad_token"]) ?? tokenContent(specialTokensMap["pad_token"]) ?? eosToken;
    const eosId = tokenizer.token_to_id(eosToken);
    if (eosId === undefined) {
      throw new ClipguardError("CLIPGUARD_E_MODEL", `${source}: the end-of-text token "${eosToken}" is not in the vocabulary`);
    }
    const padId = tokenizer.token_to_id(padToken) ?? eosId;
    return new ClipTokenizer(tokenizer, contextLength, eosId, padId);
  }

  /** Token ids of one text, with start and end tokens, truncated to the context length. */
  encode(text: string): number[] {
    const ids = this.tokenizer.encode(text).ids;
    if (ids.length <= this.contextLength) return ids;
    const kept = ids.slice(0, this.contextLength - 1);
    kept.push(this.eosId);
    return kept;
  }

  /** A padded batch for the text tower. */
  encodeBatch(texts: readonly string[]): TokenBatch {
    const encoded = texts.map((t) => this.encode(t));
    const sequence = Math.max(1, ...encoded.map((e) => e.length));
    const ids = new BigInt64Array(texts.length * sequence).fill(BigInt(this.padId));
    const attentionMask = new BigInt64Array(texts.length * sequence);
    encoded.forEach((row, b) => {
      row.forEach((id, i) => {
        ids[b * sequence + i] = BigInt(id);
        attentionMask[b * sequence + i] = 1n;
      });
    });
    return { ids, attentionMask, batch: texts.length, sequence };
  }
}
