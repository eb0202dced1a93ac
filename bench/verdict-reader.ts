/**
 * Follows the verdict stream with a blocking XREAD on its own connection and records when each
 * job's verdict arrived, so the producer can wait for (and time) any job id, even one whose
 * verdict came before it asked.
 */
import { Redis } from "ioredis";

export interface Arrival {
  decision: string;
  /** performance.now() when XREAD returned the entry. */
  at: number;
  /** The verdict JSON's error, when the decision is "error". */
  error?: string;
}

export class VerdictReader {
  private readonly redis: Redis;
  private readonly arrivals = new Map<string, Arrival>();
  private readonly waiters = new Map<string, (arrival: Arrival) => void>();
  private lastId = "0-0";
  private stopped = false;
  private readonly loop: Promise<void>;

  constructor(redisUrl: string, private readonly stream: string) {
    this.redis = new Redis(redisUrl, { maxRetriesPerRequest: null });
    this.loop = this.follow();
  }

  private async follow(): Promise<void> {
    while (!this.stopped) {
      const reply = (await this.redis.xread("COUNT", 1000, "BLOCK", 500, "STREAMS", this.stream, this.lastId)) as
        | [string, [string, string[]][]][]
        | null;
      const at = performance.now();
      for (const [, entries] of reply ?? []) {
        for (const [id, fields] of entries) {
          this.lastId = id;
          const field = (name: string) => fields[fields.indexOf(name) + 1];
          const jobId = field("jobId");
          if (jobId === undefined) continue;
          const arrival: Arrival = { decision: field("decision") ?? "", at };
          if (arrival.decision === "error") arrival.error = field("verdict");
          this.arrivals.set(jobId, arrival);
          this.waiters.get(jobId)?.(arrival);
          this.waiters.delete(jobId);
        }
      }
    }
  }

  /** Resolves with the arrival of `jobId`'s verdict (at once when it already arrived). */
  wait(jobId: string, timeoutMs = 300_000): Promise<Arrival> {
    const known = this.arrivals.get(jobId);
    this.arrivals.delete(jobId);
    if (known !== undefined) return Promise.resolve(known);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(jobId);
        reject(new Error(`no verdict for job ${jobId} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.set(jobId, (arrival) => {
        clearTimeout(timer);
        this.arrivals.delete(jobId);
        resolve(arrival);
      });
    });
  }

  async close(): Promise<void> {
    this.stopped = true;
    await this.loop.catch(() => undefined);
    this.redis.disconnect();
  }
}
