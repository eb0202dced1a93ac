import type { Redis } from "ioredis";
import type { JobVerdict } from "../shared/job-schema.js";

/**
 * Appends a verdict to the stream exactly once per job id: a marker key and the XADD are written
 * by one Lua script, so a retried job, or one re-run after a worker crash, finds the marker and
 * adds nothing. Returns the stream entry id (the existing one when already published).
 *
 * KEYS[1] marker key, KEYS[2] stream; ARGV: marker TTL (s), MAXLEN, jobId, decision, verdict JSON
 */
const PUBLISH_ONCE = `
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'jobId', ARGV[3], 'decision', ARGV[4], 'verdict', ARGV[5])
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return {1, id}
`;

export interface VerdictPublisherOptions {
  stream: string;
  /** Approximate stream length kept (XADD MAXLEN ~). */
  maxLen: number;
  /** How long the once-marker is kept; longer than any job can be retried. @default 7 days */
  markerTtlSeconds?: number;
}

export class VerdictPublisher {
  constructor(
    private readonly redis: Redis,
    private readonly options: VerdictPublisherOptions,
  ) {}

  private markerKey(jobId: string): string {
    return `${this.options.stream}:published:${jobId}`;
  }

  /** `added` is false when this job's verdict was already in the stream. */
  async publish(verdict: JobVerdict): Promise<{ added: boolean; entryId: string }> {
    const result = (await this.redis.eval(
      PUBLISH_ONCE,
      2,
      this.markerKey(verdict.jobId),
      this.options.stream,
      String(this.options.markerTtlSeconds ?? 7 * 24 * 3600),
      String(this.options.maxLen),
      verdict.jobId,
      verdict.decision,
      JSON.stringify(verdict),
    )) as [number, string];
    return { added: result[0] === 1, entryId: result[1] };
  }
}
