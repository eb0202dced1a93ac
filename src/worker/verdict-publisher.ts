import type { Redis } from "ioredis";
import { publishedMarkerKey, type JobVerdict } from "../shared/job-schema.js";

/**
 * Appends a verdict to the stream exactly once per job id: a marker key and the XADD are written
 * by one Lua script, so a retried job, or one re-run after a worker crash, finds the marker and
 * adds nothing. A `review` verdict is also appended to the review stream, by the same script and
 * so also exactly once. Returns {1, entry id} when it added the verdict; {0, entry id, verdict JSON}
 * when the job's verdict was already published (JSON false when that entry was trimmed since).
 *
 * KEYS[1] marker key, KEYS[2] verdict stream, KEYS[3] review stream (optional);
 * ARGV: marker TTL (s), MAXLEN, jobId, decision, verdict JSON
 */
const PUBLISH_ONCE = `
local existing = redis.call('GET', KEYS[1])
if existing then
  local stored = false
  local entry = redis.call('XRANGE', KEYS[2], existing, existing)[1]
  if entry then
    local fields = entry[2]
    for i = 1, #fields - 1, 2 do
      if fields[i] == 'verdict' then stored = fields[i + 1] end
    end
  end
  return {0, existing, stored}
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'jobId', ARGV[3], 'decision', ARGV[4], 'verdict', ARGV[5])
if #KEYS >= 3 and ARGV[4] == 'review' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'jobId', ARGV[3], 'decision', ARGV[4], 'verdict', ARGV[5])
end
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return {1, id}
`;

export interface VerdictPublisherOptions {
  stream: string;
  /**
   * Where `review` verdicts are also appended, with the same fields (`jobId`, `decision`,
   * `verdict`), for a reviewers' consumer group. @default none
   */
  reviewStream?: string;
  /** Approximate length kept of each stream (XADD MAXLEN ~). */
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
    return publishedMarkerKey(this.options.stream, jobId);
  }

  /**
   * `added` is false when this job's verdict was already in the stream; `verdict` is then the one
   * published first (what a re-sent webhook must carry, so every delivery with the job's
   * `webhook-id` is the same message), or the one given when that entry was trimmed away since.
   */
  async publish(verdict: JobVerdict): Promise<{ added: boolean; entryId: string; verdict: JobVerdict }> {
    const keys = [this.markerKey(verdict.jobId), this.options.stream];
    if (this.options.reviewStream !== undefined) keys.push(this.options.reviewStream);
    const result = (await this.redis.eval(
      PUBLISH_ONCE,
      keys.length,
      ...keys,
      String(this.options.markerTtlSeconds ?? 7 * 24 * 3600),
      String(this.options.maxLen),
      verdict.jobId,
      verdict.decision,
      JSON.stringify(verdict),
    )) as [number, string, (string | null)?];
    const added = result[0] === 1;
    const stored = added || typeof result[2] !== "string" ? verdict : (JSON.parse(result[2]) as JobVerdict);
    return { added, entryId: result[1], verdict: stored };
  }
}
