/**
 * A small deterministic PRNG for generated model weights: the same seed gives the same stream on
 * every machine and Node version, which `Math.random` cannot promise.
 */

/** Deterministic random source (mulberry32 core, seeded through splitmix32). */
export class SeededRandom {
  private state: number;
  /** Second Box–Muller draw, kept so every pair of uniforms yields two normals. */
  private spareNormal: number | undefined;

  /** @param seed any integer; only its low 32 bits matter. */
  constructor(seed: number) {
    // splitmix32 scrambles the seed so that nearby seeds (1, 2, 3 …) give unrelated streams.
    let z = (seed + 0x9e3779b9) | 0;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    this.state = (z ^ (z >>> 16)) >>> 0;
  }

  /** Uniform draw in [0, 1) with 32 bits of resolution. */
  uniform(): number {
    this.state = (this.state + 0x6d2b79f5) | 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform draw in [low, high). */
  uniformIn(low: number, high: number): number {
    return low + (high - low) * this.uniform();
  }

  /** Normal draw (Box–Muller). @default mean 0, std 1 */
  normal(mean = 0, std = 1): number {
    if (this.spareNormal !== undefined) {
      const spare = this.spareNormal;
      this.spareNormal = undefined;
      return mean + std * spare;
    }
    // 1 - u keeps the argument of the logarithm in (0, 1].
    const radius = Math.sqrt(-2 * Math.log(1 - this.uniform()));
    const angle = 2 * Math.PI * this.uniform();
    this.spareNormal = radius * Math.sin(angle);
    return mean + std * radius * Math.cos(angle);
  }

  /** A Float32Array of `length` normal draws. */
  normalArray(length: number, mean = 0, std = 1): Float32Array {
    const out = new Float32Array(length);
    for (let i = 0; i < length; i++) out[i] = this.normal(mean, std);
    return out;
  }
}
