import type { InferencePool } from "../clip/inference-pool.js";
import { compilePolicies, loadPolicyFile, type CompiledPolicySet, type TextEmbeddingCache } from "../policies/index.js";
import type { Logger } from "../shared/logger.js";
import type { WorkerMetrics } from "./metrics.js";

/**
 * Holds the active compiled policy set and replaces it atomically: a reload validates the file
 * and computes every embedding first, and only then swaps; a failed reload keeps the running set.
 * Reloads run one at a time, in the order they were asked for.
 */
export class PolicyManager {
  private active!: CompiledPolicySet;
  private queue: Promise<void> = Promise.resolve();

  private constructor(
    private readonly file: string,
    private readonly embedder: InferencePool,
    private readonly cache: TextEmbeddingCache,
    private readonly metrics: WorkerMetrics,
    private readonly logger: Logger,
  ) {}

  /** Loads and compiles the file; throws (CLIPGUARD_E_POLICIES, …) when it is invalid. */
  static async start(file: string, embedder: InferencePool, cache: TextEmbeddingCache, metrics: WorkerMetrics, logger: Logger): Promise<PolicyManager> {
    const manager = new PolicyManager(file, embedder, cache, metrics, logger);
    manager.activate(await manager.compile());
    return manager;
  }

  get current(): CompiledPolicySet {
    return this.active;
  }

  private async compile(): Promise<CompiledPolicySet> {
    const runsBefore = this.embedder.counters.textRuns;
    const compiled = await compilePolicies(await loadPolicyFile(this.file), this.embedder, this.cache);
    this.metrics.textCache.inc({ result: "hit" }, compiled.stats.cached);
    this.metrics.textCache.inc({ result: "miss" }, compiled.stats.embedded);
    this.metrics.textEncoderRuns.inc(this.embedder.counters.textRuns - runsBefore);
    return compiled;
  }

  private activate(next: CompiledPolicySet): void {
    for (const policy of next.policies) {
      for (const decision of ["allow", "review", "block"]) this.metrics.policyDecisions.inc({ policy: policy.id, decision }, 0);
    }
    this.metrics.policyVersion.reset();
    this.metrics.policyVersion.set({ version: next.version }, 1);
    this.active = next;
  }

  /** Queues a reload; resolves when it has been applied or refused. */
  reload(reason: string): Promise<void> {
    this.queue = this.queue.then(async () => {
      try {
        const next = await this.compile();
        this.activate(next);
        this.metrics.policyReloads.inc({ result: "ok" });
        this.logger.info({ reason, policyVersion: next.version, policies: next.policies.length }, "policies reloaded");
      } catch (err) {
        this.metrics.policyReloads.inc({ result: "failed" });
        this.logger.error({ reason, err, policyVersion: this.active.version }, "policies reload failed; keeping the running set");
      }
    });
    return this.queue;
  }

  /** Resolves once no reload is in progress. */
  settled(): Promise<void> {
    return this.queue;
  }
}
