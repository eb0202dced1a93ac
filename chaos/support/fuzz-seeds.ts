/**
 * The fuzzer's seed corpus: the fixture photos as they are (examples/images, ../shared/images)
 * and small re-encodings of them in every allowed format and its common variants (progressive
 * JPEG, palette PNG, lossless and animated WebP, TIFF with LZW, deflate and JPEG compression,
 * AVIF, still and animated GIF), so the mutations reach every decoder clipguard lets through.
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import sharp, { type Sharp } from "sharp";

export interface SeedFile {
  name: string;
  bytes: Uint8Array;
}

const FIXTURE_DIRS = ["examples/images", "../shared/images"];
const IMAGE_FILE = /\.(jpe?g|png|gif|webp|tiff?|avif)$/i;

async function fixtureFiles(): Promise<SeedFile[]> {
  const seen = new Set<string>();
  const files: SeedFile[] = [];
  for (const dir of FIXTURE_DIRS) {
    const names = await readdir(path.resolve(dir)).catch(() => [] as string[]);
    for (const name of names.filter((n) => IMAGE_FILE.test(n)).sort()) {
      const bytes = await readFile(path.resolve(dir, name));
      const key = `${bytes.length}:${bytes.subarray(0, 64).toString("hex")}`;
      if (seen.has(key)) continue; // the same photo in both folders
      seen.add(key);
      files.push({ name: `${dir.replace(/^\.\.\//, "")}/${name}`, bytes });
    }
  }
  return files;
}

type Encoder = (image: Sharp) => Sharp;

const STILL_ENCODERS: Record<string, Encoder> = {
  "jpeg-baseline.jpg": (i) => i.jpeg({ quality: 80 }),
  "jpeg-progressive.jpg": (i) => i.jpeg({ quality: 80, progressive: true, chromaSubsampling: "4:4:4" }),
  "png-rgba.png": (i) => i.ensureAlpha().png(),
  "png-palette.png": (i) => i.png({ palette: true, colours: 64 }),
  "webp-lossy.webp": (i) => i.webp({ quality: 75 }),
  "webp-lossless.webp": (i) => i.webp({ lossless: true }),
  "tiff-lzw.tiff": (i) => i.tiff({ compression: "lzw" }),
  "tiff-deflate.tiff": (i) => i.tiff({ compression: "deflate", predictor: "horizontal" }),
  "tiff-jpeg.tiff": (i) => i.tiff({ compression: "jpeg", quality: 80 }),
  "avif.avif": (i) => i.avif({ quality: 50, effort: 0 }),
  "gif-still.gif": (i) => i.gif({ colours: 32 }),
};

/** Fixture photos plus their re-encodings (each photo 96 px wide, so a decode costs milliseconds). */
export async function seedCorpus(): Promise<SeedFile[]> {
  const fixtures = await fixtureFiles();
  const seeds = [...fixtures];
  const photos = fixtures.filter((f) => !f.name.endsWith(".gif") && f.bytes.length > 10_000);
  for (const photo of photos) {
    for (const [suffix, encode] of Object.entries(STILL_ENCODERS)) {
      const bytes = await encode(sharp(photo.bytes).resize({ width: 96 })).toBuffer();
      seeds.push({ name: `${photo.name}@96.${suffix}`, bytes });
    }
  }
  for (const photo of photos) {
    // 4-frame animations: every sampled frame is decoded, each built from the ones before it
    const frames = await Promise.all([0, 1, 2, 3].map((i) => sharp(photo.bytes).resize(96, 64).modulate({ hue: i * 60 }).png().toBuffer()));
    seeds.push({ name: `${photo.name}@96.animated.gif`, bytes: await sharp(frames, { join: { animated: true } }).gif().toBuffer() });
    seeds.push({ name: `${photo.name}@96.animated.webp`, bytes: await sharp(frames, { join: { animated: true } }).webp({ quality: 60 }).toBuffer() });
  }
  for (const gif of fixtures.filter((f) => f.name.endsWith(".gif"))) {
    const animation = sharp(gif.bytes, { animated: true });
    seeds.push({ name: `${gif.name}.animated.webp`, bytes: await animation.clone().webp({ quality: 60 }).toBuffer() });
    seeds.push({ name: `${gif.name}.reencoded.gif`, bytes: await animation.clone().gif().toBuffer() });
  }
  return seeds;
}
