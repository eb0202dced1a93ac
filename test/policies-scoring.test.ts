import { describe, expect, it } from "vitest";
import type { TextEmbedder } from "../src/clip/types.js";
import { ClipguardError } from "../src/shared/errors.js";
import {
  compilePolicies,
  contrastiveScore,
  decide,
  dot,
  ensemble,
  l2normalize,
  MemoryTextEmbeddingCache,
  mostSevere,
  parsePolicies,
  similarityScore,
  softmax,
  type Decision,
  type PolicyThresholds,
} from "../src/policies/index.js";

const vec = (...xs: number[]) => Float32Array.from(xs);
const SQRT_HALF = Math.SQRT1_2;

describe("vector math", () => {
  it.each([
    { name: "unit x", v: [3, 0], expected: [1, 0] },
    { name: "3-4-5", v: [3, 4], expected: [0.6, 0.8] },
    { name: "negative", v: [0, -2, 0], expected: [0, -1, 0] },
  ])("l2normalize($name)", ({ v, expected }) => {
    const out = Array.from(l2normalize(vec(...v)));
    out.forEach((x, i) => expect(x).toBeCloseTo(expected[i] ?? NaN, 6));
  });

  it("refuses to normalize a zero vector", () => {
    expect(() => l2normalize(vec(0, 0))).toThrow(ClipguardError);
  });

  it("refuses to compare vectors of different lengths", () => {
    expect(() => dot(vec(1, 0), vec(1, 0, 0))).toThrow(/different dimensions \(2 and 3\)/);
  });

  it.each([
    // mean of [1,0] and [0,1] is [.5,.5]; normalized: [√½, √½]
    { name: "two orthogonal prompts", inputs: [[1, 0], [0, 1]], expected: [SQRT_HALF, SQRT_HALF] },
    // inputs are normalized first, so length does not weight a prompt: [3,0] → [1,0], [0,4] → [0,1]
    { name: "unnormalized inputs count equally", inputs: [[3, 0], [0, 4]], expected: [SQRT_HALF, SQRT_HALF] },
    { name: "one prompt", inputs: [[0.6, 0.8]], expected: [0.6, 0.8] },
    // [1,0,0] + [0,1,0] + [0,1,0] = [1,2,0]; / √5
    { name: "a repeated direction pulls the mean", inputs: [[1, 0, 0], [0, 1, 0], [0, 2, 0]], expected: [1 / Math.sqrt(5), 2 / Math.sqrt(5), 0] },
  ])("ensemble: $name", ({ inputs, expected }) => {
    const out = Array.from(ensemble(inputs.map((v) => vec(...v))));
    out.forEach((x, i) => expect(x).toBeCloseTo(expected[i] ?? NaN, 6));
  });

  it.each([
    { logits: [0, 0], expected: [0.5, 0.5] },
    // e / (e + 1)
    { logits: [1, 0], expected: [0.7310585786, 0.2689414214] },
    // 1 / (1 + e^-2 + e^-2)
    { logits: [2, 0, 0], expected: [0.7869860421, 0.1065069789, 0.1065069789] },
    // large logits must not overflow
    { logits: [1000, 0], expected: [1, 0] },
    { logits: [], expected: [] },
  ])("softmax($logits)", ({ logits, expected }) => {
    const out = softmax(logits);
    expect(out).toHaveLength(expected.length);
    out.forEach((x, i) => expect(x).toBeCloseTo(expected[i] ?? NaN, 9));
  });
});

describe("scores", () => {
  const image = vec(1, 0, 0);
  /** A unit vector whose cosine with `image` is `c`, rotated into axis `axis` (1 or 2). */
  const withCos = (c: number, axis: 1 | 2) => (axis === 1 ? vec(c, Math.sqrt(1 - c * c), 0) : vec(c, 0, Math.sqrt(1 - c * c)));

  it.each([
    { cos: 0.6 },
    { cos: -0.25 },
    { cos: 1 },
  ])("similarity is the cosine ($cos)", ({ cos }) => {
    expect(similarityScore(image, withCos(cos, 1))).toBeCloseTo(cos, 6);
  });

  it.each([
    // softmax([1·1, 1·0])[0] = e / (e + 1)
    { name: "scale 1, one negative", cat: 1, negs: [0], scale: 1, expected: 0.7310585786 },
    // softmax([30, 28])[0] = 1 / (1 + e^-2)
    { name: "scale 100, one negative", cat: 0.3, negs: [0.28], scale: 100, expected: 0.8807970780 },
    // softmax([30, 28, 30])[0] = 1 / (2 + e^-2)
    { name: "scale 100, two negatives", cat: 0.3, negs: [0.28, 0.3], scale: 100, expected: 0.4683105627 },
    // softmax([20, 25])[0] = 1 / (1 + e^5)
    { name: "negative closer than the category", cat: 0.2, negs: [0.25], scale: 100, expected: 0.0066928509 },
    // scale 10: softmax([3, 2.8])[0] = 1 / (1 + e^-0.2)
    { name: "logit scale flattens", cat: 0.3, negs: [0.28], scale: 10, expected: 0.5498339973 },
  ])("contrastive: $name", ({ cat, negs, scale, expected }) => {
    const negatives = negs.map((c, i) => withCos(c, i % 2 === 0 ? 2 : 1));
    expect(contrastiveScore(image, withCos(cat, 1), negatives, scale)).toBeCloseTo(expected, 5);
  });
});

describe("decisions", () => {
  const both: PolicyThresholds = { review: 0.5, block: 0.8 };
  it.each<{ score: number; thresholds: PolicyThresholds; expected: Decision }>([
    { score: 0.8, thresholds: both, expected: "block" },
    { score: 0.7999, thresholds: both, expected: "review" },
    { score: 0.5, thresholds: both, expected: "review" },
    { score: 0.4999, thresholds: both, expected: "allow" },
    { score: 1, thresholds: both, expected: "block" },
    { score: 0.9, thresholds: { review: 0.3 }, expected: "review" },
    { score: 0.2999, thresholds: { review: 0.3 }, expected: "allow" },
    { score: 0.3, thresholds: { block: 0.3 }, expected: "block" },
    { score: 0.2999, thresholds: { block: 0.3 }, expected: "allow" },
    { score: -0.2, thresholds: { review: -0.2 }, expected: "review" },
    { score: -0.21, thresholds: { review: -0.2 }, expected: "allow" },
    { score: 0.6, thresholds: { review: 0.6, block: 0.6 }, expected: "block" },
  ])("decide($score, $thresholds) = $expected", ({ score, thresholds, expected }) => {
    expect(decide(score, thresholds)).toBe(expected);
  });

  it.each<{ decisions: Decision[]; expected: Decision }>([
    { decisions: [], expected: "allow" },
    { decisions: ["allow", "allow"], expected: "allow" },
    { decisions: ["allow", "review"], expected: "review" },
    { decisions: ["review", "block", "allow"], expected: "block" },
    { decisions: ["block", "review"], expected: "block" },
  ])("mostSevere($decisions) = $expected", ({ decisions, expected }) => {
    expect(mostSevere(decisions)).toBe(expected);
  });
});

/** Fixed unit vectors per text; counts calls so tests can see batching and cache hits. */
class FakeTextEmbedder implements TextEmbedder {
  readonly calls: string[][] = [];
  constructor(
    private readonly table: Record<string, number[]>,
    readonly fingerprint = "fake-model-1",
  ) {}

  embedTexts(texts: readonly string[]): Promise<Float32Array[]> {
    this.calls.push([...texts]);
    return Promise.resolve(
      texts.map((text) => {
        const v = this.table[text];
        if (v === undefined) throw new Error(`no fake embedding for "${text}"`);
        return l2normalize(vec(...v));
      }),
    );
  }
}

const TABLE: Record<string, number[]> = {
  gun: [1, 0, 0, 0],
  rifle: [0, 1, 0, 0],
  toy: [0, 0, 1, 0],
  blood: [0, 0, 0, 1],
  wound: [0, 0, 1, 1],
  knife: [1, 1, 1, 1],
};

const POLICIES = `
version: 1
policies:
  - id: weapons
    prompts: [gun, rifle]
    negatives: [toy]
    scoring: contrastive
    thresholds: { review: 0.5, block: 0.8 }
  - id: gore
    prompts: [blood, wound, gun]   # "gun" is shared: embedded once
    thresholds: { review: 0.3 }
`;

describe("compilePolicies", () => {
  const set = parsePolicies(POLICIES, "policies.yaml");

  it("embeds each unique text once, in batches, and reuses the cache on the next compile", async () => {
    const embedder = new FakeTextEmbedder(TABLE);
    const cache = new MemoryTextEmbeddingCache();
    const first = await compilePolicies(set, embedder, cache, { batchSize: 2 });
    expect(embedder.calls).toEqual([["gun", "rifle"], ["toy", "blood"], ["wound"]]);
    expect(first.stats).toEqual({ texts: 5, cached: 0, embedded: 5, batches: 3 });
    expect(cache.stats()).toEqual({ hits: 0, misses: 5 });

    const second = await compilePolicies(set, embedder, cache, { batchSize: 2 });
    expect(embedder.calls).toHaveLength(3);
    expect(second.stats).toEqual({ texts: 5, cached: 5, embedded: 0, batches: 0 });
    expect(cache.stats()).toEqual({ hits: 5, misses: 5 });
    expect(Array.from(second.policies[1]?.category ?? [])).toEqual(Array.from(first.policies[1]?.category ?? []));

    // A new prompt costs one embedding; a different model shares nothing.
    const edited = parsePolicies(POLICIES.replace("[gun, rifle]", "[gun, rifle, knife]"), "policies.yaml");
    await compilePolicies(edited, embedder, cache);
    expect(embedder.calls.at(-1)).toEqual(["knife"]);
    const otherModel = new FakeTextEmbedder(TABLE, "fake-model-2");
    await compilePolicies(set, otherModel, cache);
    expect(otherModel.calls).toEqual([["gun", "rifle", "toy", "blood", "wound"]]);
  });

  it("batches 32 texts per call by default", async () => {
    const prompts = Array.from({ length: 40 }, (_, i) => `p${i}`);
    const table = Object.fromEntries(prompts.map((p, i) => [p, [1, i + 1]]));
    const many = parsePolicies(`version: 1\npolicies:\n  - {id: a, prompts: [${prompts.slice(0, 20).join(", ")}], thresholds: {block: 0.5}}\n  - {id: b, prompts: [${prompts.slice(20).join(", ")}], thresholds: {block: 0.5}}\n`, "p.yaml");
    const embedder = new FakeTextEmbedder(table);
    await compilePolicies(many, embedder);
    expect(embedder.calls.map((c) => c.length)).toEqual([32, 8]);
  });

  // gore's category is (blood + wound + gun) / |…| = [1, 0, √½, 1 + √½] / 2.1010029
  const GORE_NORM = Math.sqrt(1 + 0.5 + (1 + SQRT_HALF) ** 2);

  it.each([
    {
      name: "a gun",
      image: [1, 0, 0, 0],
      decision: "block",
      // weapons: cos = √½ with the category, 0 with toy: softmax([70.71, 0])[0] ≈ 1
      policies: [
        { id: "weapons", score: 1, decision: "block", prompt: "gun" },
        { id: "gore", score: 1 / GORE_NORM, decision: "review", prompt: "gun" },
      ],
    },
    {
      name: "a toy",
      image: [0, 0, 2, 0], // not unit: judge normalizes it
      decision: "review",
      // weapons: softmax([0, 100])[0] = 1 / (1 + e^100); ties between gun and rifle go to the first prompt
      policies: [
        { id: "weapons", score: 1 / (1 + Math.exp(100)), decision: "allow", prompt: "gun" },
        { id: "gore", score: SQRT_HALF / GORE_NORM, decision: "review", prompt: "wound" },
      ],
    },
    {
      name: "a rifle",
      image: [0, 1, 0, 0],
      decision: "block",
      policies: [
        { id: "weapons", score: 1, decision: "block", prompt: "rifle" },
        { id: "gore", score: 0, decision: "allow", prompt: "blood" },
      ],
    },
  ])("judges $name", async ({ image, decision, policies }) => {
    const compiled = await compilePolicies(set, new FakeTextEmbedder(TABLE));
    const judgement = compiled.judge(vec(...image));
    expect(judgement.decision).toBe(decision);
    expect(judgement.policies.map(({ id, decision: d, prompt }) => ({ id, decision: d, prompt }))).toEqual(
      policies.map(({ id, decision: d, prompt }) => ({ id, decision: d, prompt })),
    );
    judgement.policies.forEach((p, i) => expect(p.score).toBeCloseTo(policies[i]?.score ?? NaN, 6));
  });

  it("judges only the policies asked for, in file order", async () => {
    const compiled = await compilePolicies(set, new FakeTextEmbedder(TABLE));
    const judgement = compiled.judge(vec(1, 0, 0, 0), ["gore"]);
    expect(judgement.decision).toBe("review");
    expect(judgement.policies.map((p) => p.id)).toEqual(["gore"]);
    expect(compiled.judge(vec(1, 0, 0, 0), ["gore", "weapons"]).policies.map((p) => p.id)).toEqual(["weapons", "gore"]);
    expect(compiled.judge(vec(1, 0, 0, 0), [])).toEqual({ decision: "allow", policies: [] });
  });

  it("names every unknown policy id", async () => {
    const compiled = await compilePolicies(set, new FakeTextEmbedder(TABLE));
    const error = (() => {
      try {
        compiled.judge(vec(1, 0, 0, 0), ["gore", "nudity", "spam", "spam"]);
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(ClipguardError);
    expect((error as ClipguardError).code).toBe("CLIPGUARD_E_POLICY_UNKNOWN");
    expect((error as ClipguardError).message).toBe('unknown policy ids "nudity", "spam"; loaded policies: weapons, gore');
  });

  it.each<{ name: string; run: () => Promise<unknown>; code: string }>([
    {
      name: "an image embedding of another dimension",
      run: async () => (await compilePolicies(set, new FakeTextEmbedder(TABLE))).judge(vec(1, 0, 0)),
      code: "CLIPGUARD_E_MODEL",
    },
    {
      name: "an embedder that returns too few embeddings",
      run: () => compilePolicies(set, { fingerprint: "short", embedTexts: () => Promise.resolve([vec(1, 0)]) }),
      code: "CLIPGUARD_E_INTERNAL",
    },
    {
      name: "a batch size of 0",
      run: () => compilePolicies(set, new FakeTextEmbedder(TABLE), undefined, { batchSize: 0 }),
      code: "CLIPGUARD_E_CONFIG",
    },
  ])("refuses $name with $code", async ({ run, code }) => {
    const error = await run().catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ClipguardError);
    expect((error as ClipguardError).code).toBe(code);
  });
});

describe("MemoryTextEmbeddingCache", () => {
  it("keeps entries per fingerprint, evicts the least recently used, and hands out copies", async () => {
    const cache = new MemoryTextEmbeddingCache({ maxEntries: 2 });
    await cache.setMany("m", [["a", vec(1)], ["b", vec(2)]]);
    await cache.getMany("m", ["a"]); // a is now more recent than b
    await cache.setMany("m", [["c", vec(3)]]);
    expect(cache.size).toBe(2);
    const [a, b, c, otherModel] = [...(await cache.getMany("m", ["a", "b", "c"])), ...(await cache.getMany("n", ["a"]))];
    expect([a?.[0], b, c?.[0], otherModel]).toEqual([1, undefined, 3, undefined]);
    a?.fill(9);
    expect((await cache.getMany("m", ["a"]))[0]?.[0]).toBe(1);
    expect(cache.stats()).toEqual({ hits: 4, misses: 2 });
  });
});
