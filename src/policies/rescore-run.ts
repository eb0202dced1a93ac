import type { Redis } from "ioredis";
import { ClipModel } from "../clip/clip-model.js";
import { CountingEmbedder } from "../clip/counting-embedder.js";
import type { Config } from "../shared/config.js";
import { ClipguardError, isClipguardError } from "../shared/errors.js";
import { compilePolicies } from "./compiled-policies.js";
import { RedisImageEmbeddingCache } from "./image-embedding-cache.js";
import { imageSamplingFromConfig } from "./image-sampling.js";
import { loadPolicyFile } from "./policy-file.js";
import { RedisTextEmbeddingCache } from "./redis-text-embedding-cache.js";
import { rescoreWindow, type RescoreSummary } from "./rescorer.js";
import { windowStart, type RescoreWindow } from "./rescore-window.js";

export interface RescoreRunSettings {
  modelDir: string;
  variant: string;
  policiesFile: string;
  window: RescoreWindow;
}

/** A rescore run's summary plus what it cost: the image tower must not have run. */
export interface RescoreRunSummary extends RescoreSummary {
  /** Runs of the image tower in this run (always 0: it is counted to show it). */
  visionRuns: number;
  /** Runs of the text tower: 0 when every prompt was in the shared text cache. */
  textRuns: number;
  textsEmbedded: number;
}

/**
 * One `clipguard rescore` (or `POST /v1/rescore`): loads the model and the policies file,
 * compiles the policies through the shared text-embedding cache, re-judges the window from the
 * stored image embeddings and publishes the changed verdicts. Streams, TTLs and sampling
 * settings come from `config`, as the workers' do.
 *
 * @throws ClipguardError CLIPGUARD_E_CONFIG (window), _MODEL, _POLICIES, _REDIS
 */
export async function runRescore(config: Config, settings: RescoreRunSettings, redis: Redis): Promise<RescoreRunSummary> {
  windowStart(settings.window); // a bad window fails before the model is loaded
  const model = await ClipModel.load(settings.modelDir, { variant: settings.variant, intraOpThreads: config.CLIPGUARD_ORT_THREADS });
  const counting = new CountingEmbedder(model);
  try {
    const set = await loadPolicyFile(settings.policiesFile);
    const compiled = await compilePolicies(set, counting, new RedisTextEmbeddingCache(redis, { ttlSeconds: config.CLIPGUARD_TEXT_CACHE_TTL_S }));
    const summary = await rescoreWindow({
      redis,
      verdictStream: config.CLIPGUARD_VERDICT_STREAM,
      rescoreStream: config.CLIPGUARD_RESCORE_STREAM,
      maxLen: config.CLIPGUARD_VERDICT_STREAM_MAXLEN,
      cache: new RedisImageEmbeddingCache(redis, { ttlSeconds: config.CLIPGUARD_EMBEDDING_TTL }),
      ...imageSamplingFromConfig(config),
      compiled,
      preprocess: model.preprocess,
      window: settings.window,
    });
    return {
      ...summary,
      visionRuns: counting.counters.imageRuns,
      textRuns: counting.counters.textRuns,
      textsEmbedded: counting.counters.textsEmbedded,
    };
  } catch (err) {
    if (isClipguardError(err)) throw err;
    // everything else here is a Redis command that failed
    const reason = err instanceof Error ? err.message : String(err);
    throw new ClipguardError("CLIPGUARD_E_REDIS", `Redis failed during the rescore: ${reason}`, { cause: err });
  } finally {
    await model.release();
  }
}
