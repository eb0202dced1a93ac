/**
 * Seeded mutations of image files for the fuzzing scenario. Input `i` of a run is a pure function
 * of (run seed, i) and the seed corpus, so any input can be rebuilt from the seed and its index.
 */
import { crc32 } from "node:zlib";
import { pngChunks, readField, structureFields, writeField } from "./fuzz-formats.js";

/** A small, fast, seeded PRNG (mulberry32). */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    const item = items[this.int(items.length)];
    if (item === undefined) throw new Error("pick from an empty list");
    return item;
  }
}

/** The seed of input `index` of a run seeded with `runSeed`. */
export function inputSeed(runSeed: number, index: number): number {
  let h = (runSeed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

const INTERESTING_BYTES = [0x00, 0xff, 0x7f, 0x80] as const;

/** A position, half the time in the first KiB (headers), otherwise anywhere. */
function position(rng: Rng, length: number): number {
  return rng.next() < 0.5 ? rng.int(Math.min(length, 1024)) : rng.int(length);
}

type Mutation = (bytes: Uint8Array, rng: Rng) => { bytes: Uint8Array; what: string };

const bitFlips: Mutation = (bytes, rng) => {
  const out = Uint8Array.from(bytes);
  const flips = 1 + rng.int(8);
  for (let i = 0; i < flips; i++) {
    const at = position(rng, out.length);
    out[at] = (out[at] ?? 0) ^ (1 << rng.int(8));
  }
  return { bytes: out, what: `flip ${flips} bits` };
};

const interestingBytes: Mutation = (bytes, rng) => {
  const out = Uint8Array.from(bytes);
  const count = 1 + rng.int(4);
  for (let i = 0; i < count; i++) out[position(rng, out.length)] = rng.pick(INTERESTING_BYTES);
  return { bytes: out, what: `overwrite ${count} bytes with 0/ff/7f/80` };
};

/** New value for a length or dimension field: boundary values, off by one, scaled. */
function interestingValue(rng: Rng, old: number, size: number): number {
  const max = 2 ** (8 * size) - 1;
  const half = 2 ** (8 * size - 1);
  return rng.pick([0, 1, max, max - 1, half, half - 1, old + 1, Math.max(0, old - 1), old * 2, old * 16, Math.floor(old / 2), rng.int(max + 1), 16_384, 65_535, 100_000]);
}

const structureField =
  (kind: "length" | "dimension"): Mutation =>
  (bytes, rng) => {
    const fields = structureFields(bytes).filter((f) => f.kind === kind && f.offset + f.size <= bytes.length);
    if (fields.length === 0) return interestingBytes(bytes, rng);
    const out = Uint8Array.from(bytes);
    const field = rng.pick(fields);
    const old = readField(out, field);
    const value = interestingValue(rng, old, field.size);
    writeField(out, field, value);
    return { bytes: out, what: `${kind} field @${field.offset} (${field.size} B) ${old} → ${readField(out, field)}` };
  };

const truncate: Mutation = (bytes, rng) => {
  const at = rng.next() < 0.3 ? rng.int(Math.min(bytes.length, 256)) : rng.int(bytes.length);
  return { bytes: bytes.slice(0, at), what: `truncate to ${at} bytes` };
};

const duplicateRange: Mutation = (bytes, rng) => {
  const from = position(rng, bytes.length);
  const length = 1 + rng.int(Math.min(4096, bytes.length - from));
  const to = position(rng, bytes.length);
  const out = new Uint8Array(bytes.length + length);
  out.set(bytes.subarray(0, to), 0);
  out.set(bytes.subarray(from, from + length), to);
  out.set(bytes.subarray(to), to + length);
  return { bytes: out, what: `duplicate ${length} bytes @${from} at ${to}` };
};

const removeRange: Mutation = (bytes, rng) => {
  const from = position(rng, bytes.length);
  const length = 1 + rng.int(Math.min(4096, bytes.length - from));
  const out = new Uint8Array(bytes.length - length);
  out.set(bytes.subarray(0, from), 0);
  out.set(bytes.subarray(from + length), from);
  return { bytes: out, what: `remove ${length} bytes @${from}` };
};

const MUTATIONS: ReadonlyArray<[Mutation, number]> = [
  [bitFlips, 4],
  [interestingBytes, 3],
  [structureField("length"), 3],
  [structureField("dimension"), 3],
  [truncate, 2],
  [duplicateRange, 2],
  [removeRange, 1],
];
const TOTAL_WEIGHT = MUTATIONS.reduce((sum, [, w]) => sum + w, 0);

function pickMutation(rng: Rng): Mutation {
  let roll = rng.next() * TOTAL_WEIGHT;
  for (const [mutation, weight] of MUTATIONS) {
    roll -= weight;
    if (roll < 0) return mutation;
  }
  return bitFlips;
}

/** Recomputes the CRC of every PNG chunk, so a mutation gets past libpng's CRC check to the parser behind it. */
function fixPngCrcs(bytes: Uint8Array): void {
  for (const chunk of pngChunks(bytes)) {
    const end = chunk.offset + 8 + chunk.length;
    if (end + 4 > bytes.length) break;
    const crc = crc32(bytes.subarray(chunk.offset + 4, end));
    writeField(bytes, { offset: end, size: 4, littleEndian: false, kind: "length" }, crc);
  }
}

export interface MutatedInput {
  bytes: Uint8Array;
  /** What was done to the seed file, for the report of a failing input. */
  what: string;
}

/** One to three mutations of `seed`; PNGs get their CRCs fixed afterwards half the time. */
export function mutate(seed: Uint8Array, rng: Rng): MutatedInput {
  let bytes = seed;
  const steps: string[] = [];
  const count = 1 + rng.int(3);
  for (let i = 0; i < count && bytes.length > 0; i++) {
    const result = pickMutation(rng)(bytes, rng);
    bytes = result.bytes;
    steps.push(result.what);
  }
  if (bytes.length > 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && rng.next() < 0.5) {
    bytes = bytes === seed ? Uint8Array.from(bytes) : bytes;
    fixPngCrcs(bytes);
    steps.push("PNG CRCs fixed");
  }
  return { bytes, what: steps.join("; ") };
}
