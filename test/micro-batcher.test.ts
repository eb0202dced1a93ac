import { describe, expect, it } from "vitest";
import { MicroBatcher } from "../src/clip/micro-batcher.js";

/** A runner that records batch sizes and takes `ms` per batch. */
function recorder(ms: number) {
  const batches: number[][] = [];
  let concurrent = 0;
  let maxConcurrent = 0;
  const run = async (items: number[]) => {
    batches.push(items);
    concurrent++;
    maxConcurrent = Math.max(maxConcurrent, concurrent);
    await new Promise((r) => setTimeout(r, ms));
    concurrent--;
    return items.map((i) => i * 10);
  };
  return { run, batches, maxConcurrent: () => maxConcurrent };
}

describe("MicroBatcher", () => {
  it("batches concurrent items up to maxBatch and answers each caller with its own result", async () => {
    const r = recorder(20);
    const b = new MicroBatcher(r.run, { maxBatch: 4, maxWaitMs: 5, capacity: 1 });
    const results = await Promise.all([1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((i) => b.add(i)));
    expect(results).toEqual([10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    expect(r.batches.map((x) => x.length)).toEqual([4, 4, 2]);
    expect(r.batches.flat()).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("runs a lone item after maxWaitMs", async () => {
    const r = recorder(1);
    const b = new MicroBatcher(r.run, { maxBatch: 8, maxWaitMs: 30, capacity: 1 });
    const started = Date.now();
    expect(await b.add(7)).toBe(70);
    expect(Date.now() - started).toBeGreaterThanOrEqual(25);
    expect(r.batches).toEqual([[7]]);
  });

  it("with maxWaitMs 0 runs at once, and items that queue behind a busy runner go together", async () => {
    const r = recorder(30);
    const b = new MicroBatcher(r.run, { maxBatch: 8, maxWaitMs: 0, capacity: 1 });
    const first = b.add(1);
    const rest = [2, 3, 4].map((i) => b.add(i));
    await Promise.all([first, ...rest]);
    expect(r.batches).toEqual([[1], [2, 3, 4]]);
  });

  it("never runs more than `capacity` batches at once", async () => {
    const r = recorder(20);
    const b = new MicroBatcher(r.run, { maxBatch: 2, maxWaitMs: 0, capacity: 2 });
    await Promise.all(Array.from({ length: 12 }, (_, i) => b.add(i)));
    expect(r.maxConcurrent()).toBe(2);
  });

  it("rejects every item of a failed batch and keeps serving later ones", async () => {
    let fail = true;
    const b = new MicroBatcher(
      async (items: number[]) => {
        if (fail) throw new Error("boom");
        return items;
      },
      { maxBatch: 4, maxWaitMs: 1, capacity: 1 },
    );
    const failed = await Promise.allSettled([b.add(1), b.add(2)]);
    expect(failed.map((f) => f.status)).toEqual(["rejected", "rejected"]);
    fail = false;
    expect(await b.add(3)).toBe(3);
  });

  it("rejects when the runner returns the wrong number of results", async () => {
    const b = new MicroBatcher(async () => [1], { maxBatch: 4, maxWaitMs: 1, capacity: 1 });
    await expect(Promise.all([b.add(1), b.add(2)])).rejects.toThrow(/returned 1 results/);
  });
});
