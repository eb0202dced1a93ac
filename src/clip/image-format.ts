import { ClipguardError } from "../shared/errors.js";

/**
 * The image formats clipguard decodes, recognised by their magic bytes before any decoder sees
 * the data. libvips can load many more (SVG, PDF, HEIC, JPEG XL, FITS, …); several of those pull
 * in large parsers or fetch external resources, so nothing outside this list ever reaches sharp.
 */
export const ALLOWED_IMAGE_FORMATS = ["jpeg", "png", "webp", "gif", "avif", "tiff"] as const;

export type ImageFormat = (typeof ALLOWED_IMAGE_FORMATS)[number];

/** The allowlist as people read it, for messages. */
export const ALLOWED_IMAGE_FORMATS_TEXT = "JPEG, PNG, WebP, GIF, AVIF, TIFF";

const ascii = (text: string): number[] => Array.from(text, (ch) => ch.charCodeAt(0));

function startsWith(bytes: Uint8Array, magic: readonly number[], offset = 0): boolean {
  if (bytes.length < offset + magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (bytes[offset + i] !== magic[i]) return false;
  return true;
}

function latin1(bytes: Uint8Array, start: number, end: number): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1", start, Math.min(end, bytes.length));
}

/** Brands of an ISO base media file (`ftyp` box): the major brand and the compatible ones. */
function isoBrands(bytes: Uint8Array): string[] | null {
  if (!startsWith(bytes, ascii("ftyp"), 4) || bytes.length < 16) return null;
  const declared = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).readUInt32BE(0);
  const boxEnd = Math.min(bytes.length, declared >= 16 ? declared : 16, 4096);
  const brands = [latin1(bytes, 8, 12)];
  for (let at = 16; at + 4 <= boxEnd; at += 4) brands.push(latin1(bytes, at, at + 4));
  return brands;
}

const AVIF_BRANDS = new Set(["avif", "avis"]);
const HEIC_BRANDS = new Set(["heic", "heix", "hevc", "hevx", "heim", "heis", "hevm", "hevs", "mif1", "msf1", "mif2"]);

/**
 * The allowed format the bytes start with, or null. Only magic bytes are read; whether the rest
 * is a valid image is for the decoder to find out.
 */
export function sniffImageFormat(bytes: Uint8Array): ImageFormat | null {
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return "jpeg";
  if (startsWith(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return "png";
  if (startsWith(bytes, ascii("RIFF")) && startsWith(bytes, ascii("WEBP"), 8)) return "webp";
  if (startsWith(bytes, ascii("GIF87a")) || startsWith(bytes, ascii("GIF89a"))) return "gif";
  // classic TIFF (42) and BigTIFF (43), little- and big-endian
  if (startsWith(bytes, [0x49, 0x49, 0x2a, 0x00]) || startsWith(bytes, [0x4d, 0x4d, 0x00, 0x2a])) return "tiff";
  if (startsWith(bytes, [0x49, 0x49, 0x2b, 0x00]) || startsWith(bytes, [0x4d, 0x4d, 0x00, 0x2b])) return "tiff";
  const brands = isoBrands(bytes);
  if (brands !== null && brands.some((b) => AVIF_BRANDS.has(b))) return "avif";
  return null;
}

/** Refused formats recognised by magic bytes, for messages that say what the data looks like. */
const REFUSED_MAGIC: ReadonlyArray<{ magic: number[]; name: string }> = [
  { magic: ascii("%PDF-"), name: "PDF" },
  { magic: ascii("8BPS"), name: "a Photoshop document (PSD)" },
  { magic: ascii("%!PS"), name: "PostScript" },
  { magic: [0xc5, 0xd0, 0xd3, 0xc6], name: "EPS" },
  { magic: [0xff, 0x0a], name: "JPEG XL" },
  { magic: [0x00, 0x00, 0x00, 0x0c, 0x4a, 0x58, 0x4c, 0x20, 0x0d, 0x0a, 0x87, 0x0a], name: "JPEG XL" },
  { magic: [0x00, 0x00, 0x00, 0x0c, 0x6a, 0x50, 0x20, 0x20, 0x0d, 0x0a, 0x87, 0x0a], name: "JPEG 2000" },
  { magic: [0xff, 0x4f, 0xff, 0x51], name: "JPEG 2000" },
  { magic: [0x49, 0x49, 0xbc], name: "JPEG XR" },
  { magic: ascii("BM"), name: "BMP" },
  { magic: [0x00, 0x00, 0x01, 0x00], name: "an icon (ICO)" },
  { magic: [0x00, 0x00, 0x02, 0x00], name: "a cursor (CUR)" },
  { magic: [0x76, 0x2f, 0x31, 0x01], name: "OpenEXR" },
  { magic: ascii("#?RADIANCE"), name: "Radiance HDR" },
  { magic: ascii("#?RGBE"), name: "Radiance HDR" },
  { magic: ascii("qoif"), name: "QOI" },
  { magic: ascii("DDS "), name: "DirectDraw Surface (DDS)" },
  { magic: ascii("gimp xcf"), name: "a GIMP document (XCF)" },
  { magic: ascii("SIMPLE  ="), name: "FITS" },
  { magic: [0x08, 0xf2, 0xa6, 0xb6], name: "a libvips native image" },
  { magic: [0xb6, 0xa6, 0xf2, 0x08], name: "a libvips native image" },
  { magic: ascii("RIFF"), name: "a RIFF file (WAV/AVI), not WebP" },
  { magic: [0x50, 0x4b, 0x03, 0x04], name: "a ZIP archive" },
  { magic: [0x1f, 0x8b], name: "gzip data (SVGZ?)" },
  { magic: ascii("BZh"), name: "bzip2 data" },
  { magic: [0x28, 0xb5, 0x2f, 0xfd], name: "zstd data" },
  { magic: [0x7f, 0x45, 0x4c, 0x46], name: "an ELF executable" },
  { magic: ascii("MZ"), name: "a Windows executable" },
  { magic: ascii("OggS"), name: "Ogg media" },
  { magic: [0x1a, 0x45, 0xdf, 0xa3], name: "Matroska/WebM video" },
  { magic: ascii("ID3"), name: "MP3 audio" },
];

/** A name for what refused bytes look like, e.g. "SVG", "PDF", "HEIC/HEIF", "text"; null when unknown. */
export function describeRefusedFormat(bytes: Uint8Array): string | null {
  const brands = isoBrands(bytes);
  if (brands !== null) {
    if (brands.some((b) => HEIC_BRANDS.has(b))) return "HEIC/HEIF";
    if (brands.some((b) => b.startsWith("jxl"))) return "JPEG XL";
    if (brands.some((b) => b.startsWith("crx"))) return "a Canon raw photo (CR3)";
    return "MP4/QuickTime video";
  }
  // PNM: "P1".."P7" then whitespace
  if (bytes.length >= 3 && bytes[0] === 0x50 && (bytes[1] ?? 0) >= 0x31 && (bytes[1] ?? 0) <= 0x37 && isSpace(bytes[2] ?? 0)) {
    return "a Netpbm image (PNM)";
  }
  for (const { magic, name } of REFUSED_MAGIC) if (startsWith(bytes, magic)) return name;
  return describeText(bytes);
}

function isSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d || byte === 0x0c;
}

/** SVG, XML, HTML, JSON or other text; null when the bytes do not look like text. */
function describeText(bytes: Uint8Array): string | null {
  const head = bytes.subarray(0, 4096);
  let start = startsWith(head, [0xef, 0xbb, 0xbf]) ? 3 : 0;
  if (startsWith(head, [0xfe, 0xff]) || startsWith(head, [0xff, 0xfe])) return "UTF-16 text";
  let control = 0;
  for (let i = start; i < head.length; i++) {
    const b = head[i] ?? 0;
    if (b === 0) return null;
    if (b < 0x20 && !isSpace(b)) control++;
  }
  if (control > (head.length - start) / 20) return null;
  while (start < head.length && isSpace(head[start] ?? 0)) start++;
  const text = latin1(head, start, head.length).toLowerCase();
  if (text.startsWith("<")) {
    if (/<svg[\s>/]/.test(text)) return "SVG";
    if (/^<(!doctype html|html|head|body)[\s>]/.test(text)) return "HTML";
    if (text.startsWith("<?xml") || text.startsWith("<!doctype") || text.startsWith("<!--")) return "XML";
    return "markup (XML/HTML)";
  }
  if (text.startsWith("{") || text.startsWith("[")) return "JSON or other text";
  return "text";
}

/**
 * Checks raw bytes before decoding: not empty, within `maxBytes`, and one of the allowed formats
 * by magic bytes. Returns the format.
 *
 * @throws ClipguardError CLIPGUARD_E_IMAGE_EMPTY, CLIPGUARD_E_IMAGE_TOO_LARGE or CLIPGUARD_E_IMAGE_FORMAT
 */
export function checkImageBytes(bytes: Uint8Array, maxBytes: number): ImageFormat {
  if (bytes.length === 0) throw new ClipguardError("CLIPGUARD_E_IMAGE_EMPTY", "the image has zero bytes");
  if (bytes.length > maxBytes) {
    throw new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `the image is ${bytes.length} bytes; the limit is ${maxBytes} (CLIPGUARD_MAX_IMAGE_BYTES)`);
  }
  const format = sniffImageFormat(bytes);
  if (format === null) {
    const looksLike = describeRefusedFormat(bytes);
    const what = looksLike === null ? "the data is not a recognised image format" : `the image looks like ${looksLike}`;
    throw new ClipguardError("CLIPGUARD_E_IMAGE_FORMAT", `${what}; allowed formats: ${ALLOWED_IMAGE_FORMATS_TEXT}`);
  }
  return format;
}

/** Human name of an allowed format, for messages. */
export function formatName(format: ImageFormat): string {
  switch (format) {
    case "jpeg":
      return "JPEG";
    case "png":
      return "PNG";
    case "webp":
      return "WebP";
    case "gif":
      return "GIF";
    case "avif":
      return "AVIF";
    case "tiff":
      return "TIFF";
  }
}
