/**
 * Where the length and dimension fields of an image file are, for the fuzzer's structure-aware
 * mutations: PNG chunks, JPEG segments, RIFF (WebP) chunks, ISO-BMFF (AVIF) boxes, GIF blocks and
 * TIFF directories. The walkers are lenient (they stop at the first thing that does not parse)
 * and bounded (a corrupt file cannot make them loop).
 */

export interface Field {
  offset: number;
  /** Bytes: 1, 2, 3 or 4. */
  size: 1 | 2 | 3 | 4;
  littleEndian: boolean;
  kind: "length" | "dimension";
}

const MAX_STRUCTURES = 4_096;

export function readField(bytes: Uint8Array, field: Field): number {
  let value = 0;
  for (let i = 0; i < field.size; i++) {
    const byte = bytes[field.offset + (field.littleEndian ? field.size - 1 - i : i)] ?? 0;
    value = value * 256 + byte;
  }
  return value;
}

export function writeField(bytes: Uint8Array, field: Field, value: number): void {
  let rest = Math.max(0, Math.floor(value)) % 2 ** (8 * field.size);
  for (let i = field.size - 1; i >= 0; i--) {
    const at = field.offset + (field.littleEndian ? field.size - 1 - i : i);
    if (at < bytes.length) bytes[at] = rest % 256;
    rest = Math.floor(rest / 256);
  }
}

const u16be = (b: Uint8Array, at: number) => ((b[at] ?? 0) << 8) | (b[at + 1] ?? 0);
const u16le = (b: Uint8Array, at: number) => (b[at] ?? 0) | ((b[at + 1] ?? 0) << 8);
const u32be = (b: Uint8Array, at: number) => u16be(b, at) * 65_536 + u16be(b, at + 2);
const u32le = (b: Uint8Array, at: number) => u16le(b, at) + u16le(b, at + 2) * 65_536;
const tag = (b: Uint8Array, at: number) => String.fromCharCode(b[at] ?? 0, b[at + 1] ?? 0, b[at + 2] ?? 0, b[at + 3] ?? 0);

/** PNG chunks from offset 8: length (4, BE), type, data, CRC. */
export function pngChunks(b: Uint8Array): { offset: number; length: number; type: string }[] {
  const chunks: { offset: number; length: number; type: string }[] = [];
  for (let p = 8; p + 12 <= b.length && chunks.length < MAX_STRUCTURES; ) {
    const length = u32be(b, p);
    chunks.push({ offset: p, length, type: tag(b, p + 4) });
    if (p + 12 + length > b.length) break;
    p += 12 + length;
  }
  return chunks;
}

function pngFields(b: Uint8Array): Field[] {
  const fields: Field[] = [];
  for (const chunk of pngChunks(b)) {
    fields.push({ offset: chunk.offset, size: 4, littleEndian: false, kind: "length" });
    if (chunk.type === "IHDR") {
      fields.push({ offset: chunk.offset + 8, size: 4, littleEndian: false, kind: "dimension" });
      fields.push({ offset: chunk.offset + 12, size: 4, littleEndian: false, kind: "dimension" });
    }
  }
  return fields;
}

function jpegFields(b: Uint8Array): Field[] {
  const fields: Field[] = [];
  let p = 2;
  for (let n = 0; p + 4 <= b.length && n < MAX_STRUCTURES; n++) {
    if (b[p] !== 0xff) break;
    const marker = b[p + 1] ?? 0;
    if (marker === 0xff) {
      p += 1;
      continue;
    }
    if ((marker >= 0xd0 && marker <= 0xd9) || marker === 0x01) {
      p += 2;
      continue;
    }
    const length = u16be(b, p + 2);
    fields.push({ offset: p + 2, size: 2, littleEndian: false, kind: "length" });
    const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isSof) {
      fields.push({ offset: p + 5, size: 2, littleEndian: false, kind: "dimension" });
      fields.push({ offset: p + 7, size: 2, littleEndian: false, kind: "dimension" });
    }
    p += 2 + length;
    if (marker === 0xda) {
      // entropy-coded data up to the next marker that is not a stuffed byte or a restart
      while (p + 1 < b.length && !(b[p] === 0xff && (b[p + 1] ?? 0) !== 0 && ((b[p + 1] ?? 0) < 0xd0 || (b[p + 1] ?? 0) > 0xd7))) p++;
    }
  }
  return fields;
}

function riffFields(b: Uint8Array): Field[] {
  const fields: Field[] = [{ offset: 4, size: 4, littleEndian: true, kind: "length" }];
  for (let p = 12, n = 0; p + 8 <= b.length && n < MAX_STRUCTURES; n++) {
    const type = tag(b, p);
    const size = u32le(b, p + 4);
    fields.push({ offset: p + 4, size: 4, littleEndian: true, kind: "length" });
    const data = p + 8;
    if (type === "VP8X") {
      fields.push({ offset: data + 4, size: 3, littleEndian: true, kind: "dimension" });
      fields.push({ offset: data + 7, size: 3, littleEndian: true, kind: "dimension" });
    } else if (type === "VP8 ") {
      fields.push({ offset: data + 6, size: 2, littleEndian: true, kind: "dimension" });
      fields.push({ offset: data + 8, size: 2, littleEndian: true, kind: "dimension" });
    } else if (type === "VP8L") {
      fields.push({ offset: data + 1, size: 2, littleEndian: true, kind: "dimension" });
      fields.push({ offset: data + 3, size: 2, littleEndian: true, kind: "dimension" });
    } else if (type === "ANMF") {
      fields.push({ offset: data + 6, size: 3, littleEndian: true, kind: "dimension" });
      fields.push({ offset: data + 9, size: 3, littleEndian: true, kind: "dimension" });
    }
    // ANMF frames hold chunks of their own after a 16-byte header
    p = type === "ANMF" ? data + 16 : data + size + (size % 2);
  }
  return fields;
}

/** Boxes that hold boxes, and where their children start (full boxes have version and flags; iinf an entry count too). */
const CONTAINER_BOXES = new Map([
  ["moov", 8], ["trak", 8], ["mdia", 8], ["minf", 8], ["stbl", 8], ["dinf", 8], ["iprp", 8], ["ipco", 8], ["grpl", 8],
  ["meta", 12], ["iref", 12], ["iinf", 14],
]);

function boxFields(b: Uint8Array, start: number, end: number, fields: Field[], depth: number): void {
  for (let p = start, n = 0; p + 8 <= end && n < MAX_STRUCTURES && fields.length < MAX_STRUCTURES; n++) {
    const size = u32be(b, p);
    const type = tag(b, p + 4);
    fields.push({ offset: p, size: 4, littleEndian: false, kind: "length" });
    if (type === "ispe") {
      fields.push({ offset: p + 12, size: 4, littleEndian: false, kind: "dimension" });
      fields.push({ offset: p + 16, size: 4, littleEndian: false, kind: "dimension" });
    }
    if (size < 8) break;
    const header = CONTAINER_BOXES.get(type);
    if (header !== undefined && depth < 8) boxFields(b, p + header, Math.min(end, p + size), fields, depth + 1);
    p += size;
  }
}

function gifFields(b: Uint8Array): Field[] {
  const fields: Field[] = [
    { offset: 6, size: 2, littleEndian: true, kind: "dimension" },
    { offset: 8, size: 2, littleEndian: true, kind: "dimension" },
  ];
  const flags = b[10] ?? 0;
  let p = 13 + (flags & 0x80 ? 3 * 2 ** ((flags & 7) + 1) : 0);
  const subBlocks = () => {
    while (p < b.length && fields.length < MAX_STRUCTURES) {
      const size = b[p] ?? 0;
      fields.push({ offset: p, size: 1, littleEndian: true, kind: "length" });
      p += 1 + size;
      if (size === 0) return;
    }
  };
  for (let n = 0; p < b.length && n < MAX_STRUCTURES; n++) {
    const block = b[p];
    if (block === 0x21) {
      p += 2;
      subBlocks();
    } else if (block === 0x2c) {
      fields.push({ offset: p + 5, size: 2, littleEndian: true, kind: "dimension" });
      fields.push({ offset: p + 7, size: 2, littleEndian: true, kind: "dimension" });
      const local = b[p + 9] ?? 0;
      p += 10 + (local & 0x80 ? 3 * 2 ** ((local & 7) + 1) : 0);
      fields.push({ offset: p, size: 1, littleEndian: true, kind: "length" }); // LZW minimum code size
      p += 1;
      subBlocks();
    } else {
      break;
    }
  }
  return fields;
}

const TIFF_DIMENSION_TAGS = new Set([256, 257]);
const TIFF_LENGTH_TAGS = new Set([258, 273, 277, 278, 279, 322, 323, 324, 325, 330]);

function tiffFields(b: Uint8Array): Field[] {
  const le = b[0] === 0x49;
  const u16 = le ? u16le : u16be;
  const u32 = le ? u32le : u32be;
  const fields: Field[] = [{ offset: 4, size: 4, littleEndian: le, kind: "length" }];
  const seen = new Set<number>();
  for (let ifd = u32(b, 4); ifd > 0 && ifd + 2 <= b.length && !seen.has(ifd) && seen.size < 64; ) {
    seen.add(ifd);
    const count = u16(b, ifd);
    fields.push({ offset: ifd, size: 2, littleEndian: le, kind: "length" });
    for (let i = 0; i < count && ifd + 2 + 12 * (i + 1) <= b.length; i++) {
      const entry = ifd + 2 + 12 * i;
      const t = u16(b, entry);
      const type = u16(b, entry + 2);
      const size = type === 3 ? 2 : 4;
      if (TIFF_DIMENSION_TAGS.has(t)) fields.push({ offset: entry + 8, size, littleEndian: le, kind: "dimension" });
      else if (TIFF_LENGTH_TAGS.has(t)) fields.push({ offset: entry + 8, size, littleEndian: le, kind: "length" });
      fields.push({ offset: entry + 4, size: 4, littleEndian: le, kind: "length" }); // the entry's value count
    }
    const next = ifd + 2 + 12 * count;
    if (next + 4 > b.length) break;
    fields.push({ offset: next, size: 4, littleEndian: le, kind: "length" });
    ifd = u32(b, next);
  }
  return fields;
}

/** The length and dimension fields of an image, by its magic bytes; empty for anything else. */
export function structureFields(b: Uint8Array): Field[] {
  if (b[0] === 0x89 && tag(b, 1) === "PNG\r") return pngFields(b);
  if (b[0] === 0xff && b[1] === 0xd8) return jpegFields(b);
  if (tag(b, 0) === "RIFF") return riffFields(b);
  if (tag(b, 0) === "GIF8") return gifFields(b);
  if (tag(b, 0) === "II*\0" || tag(b, 0) === "MM\0*") return tiffFields(b);
  if (tag(b, 4) === "ftyp") {
    const fields: Field[] = [];
    boxFields(b, 0, b.length, fields, 0);
    return fields;
  }
  return [];
}
