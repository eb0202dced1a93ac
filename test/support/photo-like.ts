import sharp from "sharp";

/**
 * A deterministic photo-like JPEG: smooth gradients, soft shapes and grain, so that decoding
 * costs what a real photo costs and a resize has detail to lose (unlike a solid colour).
 */
export async function photoLikeJpeg(width: number, height: number, seed = 1, quality = 88): Promise<Buffer> {
  const rgb = Buffer.alloc(width * height * 3);
  let s = seed >>> 0 || 1;
  const noise = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) % 25) - 12;
  };
  const cx = width * (0.3 + 0.4 * ((seed * 37) % 10) / 10);
  const cy = height * 0.5;
  const r2 = (Math.min(width, height) * 0.3) ** 2;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const inDisc = (x - cx) ** 2 + (y - cy) ** 2 < r2;
      const stripe = Math.floor((x + y) / Math.max(8, width / 64)) % 2 === 0;
      const base = [(255 * x) / width, (255 * y) / height, inDisc ? 220 : stripe ? 90 : 40];
      for (let c = 0; c < 3; c++) rgb[i + c] = Math.max(0, Math.min(255, Math.round((base[c] ?? 0) + noise())));
    }
  }
  return sharp(rgb, { raw: { width, height, channels: 3 } }).jpeg({ quality }).toBuffer();
}
