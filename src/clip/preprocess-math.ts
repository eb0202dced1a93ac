/**
 * The arithmetic of Hugging Face's CLIPImageProcessor, as plain functions over numbers and arrays:
 * the resize output size, the center-crop box (with zero padding) and the uint8 HWC → normalized
 * CHW float32 conversion. No I/O; `preprocess.ts` feeds these from sharp.
 */

export interface Size {
  width: number;
  height: number;
}

/**
 * The size `get_resize_output_image_size(image, shortest_edge, default_to_square=False)` returns:
 * the shorter edge becomes `shortestEdge`, the longer one `int(shortestEdge * long / short)`
 * (Python's `int()` truncates; the product is an exact integer and the division is IEEE double in
 * both languages, so the result matches bit for bit). A square image counts as portrait
 * (`width <= height`), which only matters for which edge is called "short".
 */
export function resizeOutputSize(width: number, height: number, shortestEdge: number): Size {
  assertDimension("width", width);
  assertDimension("height", height);
  assertDimension("shortestEdge", shortestEdge);
  const portrait = width <= height;
  const short = portrait ? width : height;
  const long = portrait ? height : width;
  const newLong = Math.trunc((shortestEdge * long) / short);
  return portrait ? { width: shortestEdge, height: newLong } : { width: newLong, height: shortestEdge };
}

/**
 * Where the center crop takes its pixels from and where they land in the output.
 *
 * HF's `center_crop`: `top = (h - cropH) // 2`, `left = (w - cropW) // 2`. When the image is
 * smaller than the crop along an axis, HF first pads it with zeros to the crop size, placing it at
 * `ceil((crop - size) / 2)`; the padding is pixel value 0 *before* rescale and normalize.
 * Per axis this comes down to: source offset `floor((size - crop) / 2)` when `size >= crop`, else
 * destination offset `ceil((crop - size) / 2)`.
 */
export interface CropPlan {
  /** Output size (the crop size, or the input size when there is no crop). */
  outWidth: number;
  outHeight: number;
  /** Top-left of the copied region in the source image. */
  srcLeft: number;
  srcTop: number;
  /** Top-left of the copied region in the output; everything outside it is padding (value 0). */
  dstLeft: number;
  dstTop: number;
  /** Size of the copied region. */
  copyWidth: number;
  copyHeight: number;
}

function cropAxis(size: number, crop: number): { src: number; dst: number; copy: number } {
  if (size >= crop) return { src: Math.floor((size - crop) / 2), dst: 0, copy: crop };
  return { src: 0, dst: Math.ceil((crop - size) / 2), copy: size };
}

/** The center-crop plan for an image of `width`×`height` cropped to `cropWidth`×`cropHeight`. */
export function centerCropPlan(width: number, height: number, cropWidth: number, cropHeight: number): CropPlan {
  assertDimension("width", width);
  assertDimension("height", height);
  assertDimension("cropWidth", cropWidth);
  assertDimension("cropHeight", cropHeight);
  const x = cropAxis(width, cropWidth);
  const y = cropAxis(height, cropHeight);
  return {
    outWidth: cropWidth,
    outHeight: cropHeight,
    srcLeft: x.src,
    srcTop: y.src,
    dstLeft: x.dst,
    dstTop: y.dst,
    copyWidth: x.copy,
    copyHeight: y.copy,
  };
}

/** The plan that copies the whole image unchanged (`do_center_crop: false`). */
export function identityCropPlan(width: number, height: number): CropPlan {
  assertDimension("width", width);
  assertDimension("height", height);
  return { outWidth: width, outHeight: height, srcLeft: 0, srcTop: 0, dstLeft: 0, dstTop: 0, copyWidth: width, copyHeight: height };
}

export interface NormalizeOptions {
  /** Multiplies each uint8 value first (CLIP: 1/255; 1 when `do_rescale` is false). */
  rescaleFactor: number;
  /** When false, the rescaled values are returned as they are. */
  doNormalize: boolean;
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

/**
 * The float32 value of one channel value `v` (0–255), computed the way numpy does in HF:
 * `rescale` multiplies in float64 and casts to float32; `normalize` works in float32 with the mean
 * and std cast to float32. `Math.fround` after each double operation gives exactly the float32
 * result of the same operation on float32 operands (double has more than 2×24+2 bits).
 */
export function normalizeValue(v: number, channel: 0 | 1 | 2, options: NormalizeOptions): number {
  const x = Math.fround(v * options.rescaleFactor);
  if (!options.doNormalize) return x;
  const mean = Math.fround(options.mean[channel]);
  const std = Math.fround(options.std[channel]);
  return Math.fround(Math.fround(x - mean) / std);
}

/**
 * Crops (or pads) a packed uint8 RGB image (HWC, 3 channels, row-major) by `plan` and converts it
 * to normalized float32 CHW in R, G, B order: `out[c * H * W + y * W + x]`. Padding pixels are the
 * normalized value of 0, as in HF (padding happens before rescale and normalize).
 */
export function hwcToNormalizedChw(rgb: Uint8Array, width: number, height: number, plan: CropPlan, options: NormalizeOptions): Float32Array {
  if (rgb.length !== width * height * 3) {
    throw new RangeError(`expected ${width * height * 3} bytes of RGB for ${width}x${height}, got ${rgb.length}`);
  }
  if (plan.srcLeft + plan.copyWidth > width || plan.srcTop + plan.copyHeight > height) {
    throw new RangeError(`crop region ${plan.copyWidth}x${plan.copyHeight}+${plan.srcLeft}+${plan.srcTop} is outside the ${width}x${height} image`);
  }
  const outW = plan.outWidth;
  const outH = plan.outHeight;
  const plane = outW * outH;
  const out = new Float32Array(3 * plane);
  // 256-entry lookup per channel: every output value is a function of (value, channel) only.
  const lut = [0, 1, 2].map((c) => {
    const table = new Float32Array(256);
    for (let v = 0; v < 256; v++) table[v] = normalizeValue(v, c as 0 | 1 | 2, options);
    return table;
  }) as [Float32Array, Float32Array, Float32Array];
  const [lutR, lutG, lutB] = lut;
  const padded = plan.copyWidth !== outW || plan.copyHeight !== outH;
  if (padded) {
    out.fill(lutR[0] ?? 0, 0, plane);
    out.fill(lutG[0] ?? 0, plane, 2 * plane);
    out.fill(lutB[0] ?? 0, 2 * plane, 3 * plane);
  }
  for (let y = 0; y < plan.copyHeight; y++) {
    let src = ((plan.srcTop + y) * width + plan.srcLeft) * 3;
    let dst = (plan.dstTop + y) * outW + plan.dstLeft;
    for (let x = 0; x < plan.copyWidth; x++, src += 3, dst++) {
      // Indices are in range by the checks above; `?? 0` only satisfies noUncheckedIndexedAccess.
      out[dst] = lutR[rgb[src] ?? 0] ?? 0;
      out[plane + dst] = lutG[rgb[src + 1] ?? 0] ?? 0;
      out[2 * plane + dst] = lutB[rgb[src + 2] ?? 0] ?? 0;
    }
  }
  return out;
}

/** A rectangle of an image, in pixels. */
export interface Region {
  left: number;
  top: number;
  width: number;
  height: number;
}

// PIL's 8-bit resampling (libImaging/Resample.c), reproduced exactly: double coefficients from the
// bicubic filter (a = -0.5) widened by the scale when shrinking, normalized to sum 1, turned into
// fixed point with 22 fractional bits; horizontal pass first, rounded and clipped to uint8, then
// the vertical pass.
const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

function bicubicFilter(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

interface Coefficients {
  /** Taps per output pixel (the stride of `weights`). */
  ksize: number;
  /** Per output pixel: first input index, number of taps. */
  bounds: Int32Array;
  /** Fixed-point weights, `ksize` per output pixel. */
  weights: Int32Array;
}

function precomputeCoefficients(inSize: number, outSize: number): Coefficients {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    // C's (int) cast truncates toward zero
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const count = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let sum = 0;
    for (let x = 0; x < count; x++) {
      const value = bicubicFilter((x + xmin - center + 0.5) / filterScale);
      w[x] = value;
      sum += value;
    }
    for (let x = 0; x < count; x++) {
      const value = sum !== 0 ? (w[x] ?? 0) / sum : (w[x] ?? 0);
      weights[xx * ksize + x] = value < 0 ? Math.trunc(-0.5 + value * ONE) : Math.trunc(0.5 + value * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = count;
  }
  return { ksize, bounds, weights };
}

const clip8 = (sum: number): number => Math.min(255, Math.max(0, sum >> PRECISION_BITS));

/**
 * PIL's `Image.resize((outWidth, outHeight), Image.BICUBIC)` of a packed RGB image, bit for bit,
 * computing only `region` of the output (each output pixel depends on its own window alone, so
 * the region equals the same cut from the full result). Returns the region as packed RGB.
 */
export function resizeBicubicRegion(rgb: Uint8Array, width: number, height: number, outWidth: number, outHeight: number, region: Region): Uint8Array {
  if (rgb.length !== width * height * 3) throw new RangeError(`expected ${width * height * 3} bytes of RGB for ${width}x${height}`);
  if (region.left < 0 || region.top < 0 || region.left + region.width > outWidth || region.top + region.height > outHeight) {
    throw new RangeError(`region is outside the ${outWidth}x${outHeight} output`);
  }
  // Horizontal pass over the input rows the vertical pass will read.
  const vertical = outHeight !== height ? precomputeCoefficients(height, outHeight) : null;
  let rowFirst = region.top;
  let rowEnd = region.top + region.height;
  if (vertical !== null) {
    rowFirst = vertical.bounds[region.top * 2] ?? 0;
    const last = region.top + region.height - 1;
    rowEnd = (vertical.bounds[last * 2] ?? 0) + (vertical.bounds[last * 2 + 1] ?? 0);
  }
  const rows = rowEnd - rowFirst;
  const temp = new Uint8Array(rows * region.width * 3);
  const horizontal = outWidth !== width ? precomputeCoefficients(width, outWidth) : null;
  for (let y = 0; y < rows; y++) {
    const inRow = (rowFirst + y) * width * 3;
    for (let i = 0; i < region.width; i++) {
      const xx = region.left + i;
      const at = (y * region.width + i) * 3;
      if (horizontal === null) {
        temp[at] = rgb[inRow + xx * 3] ?? 0;
        temp[at + 1] = rgb[inRow + xx * 3 + 1] ?? 0;
        temp[at + 2] = rgb[inRow + xx * 3 + 2] ?? 0;
        continue;
      }
      const xmin = horizontal.bounds[xx * 2] ?? 0;
      const count = horizontal.bounds[xx * 2 + 1] ?? 0;
      const k0 = xx * horizontal.ksize;
      let r = HALF;
      let g = HALF;
      let b = HALF;
      for (let x = 0; x < count; x++) {
        const k = horizontal.weights[k0 + x] ?? 0;
        const p = inRow + (xmin + x) * 3;
        r += (rgb[p] ?? 0) * k;
        g += (rgb[p + 1] ?? 0) * k;
        b += (rgb[p + 2] ?? 0) * k;
      }
      temp[at] = clip8(r);
      temp[at + 1] = clip8(g);
      temp[at + 2] = clip8(b);
    }
  }
  if (vertical === null) return temp;
  const out = new Uint8Array(region.width * region.height * 3);
  const stride = region.width * 3;
  for (let j = 0; j < region.height; j++) {
    const yy = region.top + j;
    const ymin = (vertical.bounds[yy * 2] ?? 0) - rowFirst;
    const count = vertical.bounds[yy * 2 + 1] ?? 0;
    const k0 = yy * vertical.ksize;
    for (let i = 0; i < stride; i++) {
      let sum = HALF;
      for (let y = 0; y < count; y++) sum += (temp[(ymin + y) * stride + i] ?? 0) * (vertical.weights[k0 + y] ?? 0);
      out[j * stride + i] = clip8(sum);
    }
  }
  return out;
}

function assertDimension(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
}
