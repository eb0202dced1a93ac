/**
 * A plain-TypeScript CLIP forward pass over the same weights the ONNX generator uses, written
 * from the architecture and not from the graph, so that the two can check each other. Math runs
 * in float64; embeddings are returned unnormalized, one Float32Array per item.
 */
import type { ClipArchConfig, ClipWeights } from "../../tools/onnx/clip-architecture.js";

const LAYER_NORM_EPSILON = 1e-5;

/** Row-major [rows, cols]. */
interface Matrix {
  rows: number;
  cols: number;
  data: Float64Array;
}

function tensor(weights: ClipWeights, name: string): Float32Array {
  const data = weights.tensors[name];
  if (data === undefined) throw new Error(`reference: missing weight ${name}`);
  return data;
}

function at(values: ArrayLike<number>, index: number): number {
  const value = values[index];
  if (value === undefined) throw new Error(`reference: index ${index} out of range`);
  return value;
}

function layerNorm(x: Matrix, weights: ClipWeights, name: string): Matrix {
  const gamma = tensor(weights, `${name}.gamma`);
  const beta = tensor(weights, `${name}.beta`);
  const out = new Float64Array(x.data.length);
  for (let r = 0; r < x.rows; r++) {
    const row = x.data.subarray(r * x.cols, (r + 1) * x.cols);
    const mean = row.reduce((sum, v) => sum + v, 0) / x.cols;
    const variance = row.reduce((sum, v) => sum + (v - mean) ** 2, 0) / x.cols;
    const scale = 1 / Math.sqrt(variance + LAYER_NORM_EPSILON);
    for (let c = 0; c < x.cols; c++) {
      out[r * x.cols + c] = (at(row, c) - mean) * scale * at(gamma, c) + at(beta, c);
    }
  }
  return { rows: x.rows, cols: x.cols, data: out };
}

/** x·W (+ b); W is [in, out]. */
function linear(x: Matrix, weights: ClipWeights, name: string, withBias = true): Matrix {
  const w = tensor(weights, withBias ? `${name}.weight` : name);
  const outCols = w.length / x.cols;
  const out = new Float64Array(x.rows * outCols);
  if (withBias) {
    const bias = tensor(weights, `${name}.bias`);
    for (let r = 0; r < x.rows; r++) for (let c = 0; c < outCols; c++) out[r * outCols + c] = at(bias, c);
  }
  for (let r = 0; r < x.rows; r++) {
    for (let k = 0; k < x.cols; k++) {
      const xv = at(x.data, r * x.cols + k);
      for (let c = 0; c < outCols; c++) out[r * outCols + c] = at(out, r * outCols + c) + xv * at(w, k * outCols + c);
    }
  }
  return { rows: x.rows, cols: outCols, data: out };
}

function add(a: Matrix, b: Matrix): Matrix {
  return { rows: a.rows, cols: a.cols, data: a.data.map((v, i) => v + at(b.data, i)) };
}

/** `allowed(query, key)` says whether the query may attend to the key. */
function attention(x: Matrix, weights: ClipWeights, prefix: string, heads: number, allowed: (q: number, k: number) => boolean): Matrix {
  const q = linear(x, weights, `${prefix}.q`);
  const k = linear(x, weights, `${prefix}.k`);
  const v = linear(x, weights, `${prefix}.v`);
  const width = x.cols;
  const headDim = width / heads;
  const context = new Float64Array(x.rows * width);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < x.rows; i++) {
      const keys = [...Array(x.rows).keys()].filter((j) => allowed(i, j));
      if (keys.length === 0) throw new Error(`reference: query ${i} may attend to no key`);
      const scores = keys.map((j) => {
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += at(q.data, i * width + h * headDim + d) * at(k.data, j * width + h * headDim + d);
        return dot / Math.sqrt(headDim);
      });
      const max = Math.max(...scores);
      const exps = scores.map((s) => Math.exp(s - max));
      const total = exps.reduce((sum, e) => sum + e, 0);
      keys.forEach((j, n) => {
        const p = at(exps, n) / total;
        for (let d = 0; d < headDim; d++) {
          const index = i * width + h * headDim + d;
          context[index] = at(context, index) + p * at(v.data, j * width + h * headDim + d);
        }
      });
    }
  }
  return linear({ rows: x.rows, cols: width, data: context }, weights, `${prefix}.out`);
}

function mlp(x: Matrix, weights: ClipWeights, prefix: string): Matrix {
  const hidden = linear(x, weights, `${prefix}.fc1`);
  const activated = hidden.data.map((v) => v / (1 + Math.exp(-1.702 * v)));
  return linear({ ...hidden, data: activated }, weights, `${prefix}.fc2`);
}

function block(x: Matrix, weights: ClipWeights, prefix: string, heads: number, allowed: (q: number, k: number) => boolean): Matrix {
  const afterAttention = add(x, attention(layerNorm(x, weights, `${prefix}.ln1`), weights, `${prefix}.attn`, heads, allowed));
  return add(afterAttention, mlp(layerNorm(afterAttention, weights, `${prefix}.ln2`), weights, `${prefix}.mlp`));
}

function row(x: Matrix, r: number): Matrix {
  return { rows: 1, cols: x.cols, data: x.data.slice(r * x.cols, (r + 1) * x.cols) };
}

/** Image embeddings of `batch` CHW float32 images laid end to end in `pixels`. */
export function referenceImageEmbeds(weights: ClipWeights, config: ClipArchConfig, pixels: Float32Array, batch: number): Float32Array[] {
  const { imageSize: size, patchSize: patch, width, layers, heads } = config.vision;
  const grid = size / patch;
  const tokens = grid * grid + 1;
  const kernel = tensor(weights, "vision.patch_embed");
  const classEmbed = tensor(weights, "vision.class_embed");
  const posEmbed = tensor(weights, "vision.pos_embed");
  if (pixels.length !== batch * 3 * size * size) throw new Error("reference: pixel count does not match batch");
  const results: Float32Array[] = [];
  for (let b = 0; b < batch; b++) {
    const image = pixels.subarray(b * 3 * size * size, (b + 1) * 3 * size * size);
    const x: Matrix = { rows: tokens, cols: width, data: new Float64Array(tokens * width) };
    for (let c = 0; c < width; c++) x.data[c] = at(classEmbed, c);
    for (let py = 0; py < grid; py++) {
      for (let px = 0; px < grid; px++) {
        const token = 1 + py * grid + px;
        for (let c = 0; c < width; c++) {
          let sum = 0;
          for (let ch = 0; ch < 3; ch++) {
            for (let ky = 0; ky < patch; ky++) {
              for (let kx = 0; kx < patch; kx++) {
                const pixel = at(image, (ch * size + py * patch + ky) * size + px * patch + kx);
                sum += pixel * at(kernel, ((c * 3 + ch) * patch + ky) * patch + kx);
              }
            }
          }
          x.data[token * width + c] = sum;
        }
      }
    }
    let h = layerNorm(add(x, { ...x, data: Float64Array.from(posEmbed) }), weights, "vision.ln_pre");
    for (let i = 0; i < layers; i++) h = block(h, weights, `vision.blocks.${i}`, heads, () => true);
    const pooled = layerNorm(row(h, 0), weights, "vision.ln_post");
    results.push(Float32Array.from(linear(pooled, weights, "vision.proj", false).data));
  }
  return results;
}

/**
 * Text embeddings of tokenized prompts (each row may have its own length ≤ contextLength).
 * With `attentionMask`, keys whose mask is 0 are hidden on top of the causal mask.
 */
export function referenceTextEmbeds(weights: ClipWeights, config: ClipArchConfig, ids: number[][], attentionMask?: number[][]): Float32Array[] {
  const { width, layers, heads, eosTokenId, contextLength } = config.text;
  const tokenEmbed = tensor(weights, "text.token_embed");
  const posEmbed = tensor(weights, "text.pos_embed");
  return ids.map((sequence, b) => {
    if (sequence.length > contextLength) throw new Error("reference: sequence longer than contextLength");
    const x: Matrix = { rows: sequence.length, cols: width, data: new Float64Array(sequence.length * width) };
    sequence.forEach((id, t) => {
      for (let c = 0; c < width; c++) x.data[t * width + c] = at(tokenEmbed, id * width + c) + at(posEmbed, t * width + c);
    });
    const keyMask = attentionMask?.[b];
    const allowed = (q: number, k: number): boolean => k <= q && (keyMask === undefined || keyMask[k] !== 0);
    let h: Matrix = x;
    for (let i = 0; i < layers; i++) h = block(h, weights, `text.blocks.${i}`, heads, allowed);
    const eos = sequence.indexOf(eosTokenId);
    const pooled = layerNorm(row(h, eos === -1 ? 0 : eos), weights, "text.ln_final");
    return Float32Array.from(linear(pooled, weights, "text.proj", false).data);
  });
}
