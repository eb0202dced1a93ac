import type { Redis } from "ioredis";
import type { JobVerdict } from "../shared/job-schema.js";
import { disconnectSettled, whenReady } from "./redis-ready.js";
import { lastEntryId, readVerdictEntries } from "./verdict-stream.js";

type Listener = (verdict: JobVerdict) => void;

/**
 * One blocking reader of the verdict stream shared by every waiter of a client: waiting for N
 * jobs costs one connection and one XREAD loop, not N. The stream rather than BullMQ's events is
 * read because it is the source of truth for verdicts, error verdicts included, and because the
 * reader can start from a known entry id, so no verdict falls between "positioned" and "reading".
 *
 * Waiters register, then check whether the verdict already exists: anything published before the
 * check is found by the check, anything after it by the loop.
 */
export class VerdictWatcher {
  private readonly listeners = new Map<string, Set<Listener>>();
  private positioned: Promise<void> | undefined;
  private closed = false;

  /** `connection` is used only for blocking reads; the watcher disconnects it on close. */
  constructor(
    private readonly connection: Redis,
    private readonly stream: string,
    private readonly options: { connectTimeoutMs: number; onError?: (err: unknown) => void },
  ) {}

  /** Resolves once every verdict published from now on will reach the listeners. */
  start(): Promise<void> {
    this.positioned ??= (async () => {
      await whenReady(this.connection, this.options.connectTimeoutMs);
      const from = await lastEntryId(this.connection, this.stream);
      void this.loop(from);
    })().catch((err: unknown) => {
      this.positioned = undefined; // let the next waiter try again
      throw err;
    });
    return this.positioned;
  }

  /** Calls `listener` with the verdict of `jobId` when it is published; returns the unsubscribe. */
  watch(jobId: string, listener: Listener): () => void {
    let set = this.listeners.get(jobId);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(jobId, set);
    }
    set.add(listener);
    return () => {
      const current = this.listeners.get(jobId);
      current?.delete(listener);
      if (current?.size === 0) this.listeners.delete(jobId);
    };
  }

  private async loop(from: string): Promise<void> {
    let last = from;
    while (!this.closed) {
      try {
        await whenReady(this.connection, this.options.connectTimeoutMs);
        const entries = await readVerdictEntries(this.connection, this.stream, last, { count: 500, blockMs: 5_000 });
        for (const entry of entries) {
          last = entry.id;
          const listeners = this.listeners.get(entry.jobId);
          if (listeners === undefined || typeof entry.verdict !== "object") continue;
          for (const listener of [...listeners]) listener(entry.verdict);
        }
      } catch (err) {
        if (this.closed) return;
        this.options.onError?.(err);
        // Redis is away: waiters keep waiting (and time out on their own); try again shortly
        await new Promise((resolve) => setTimeout(resolve, 1_000).unref());
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
    await disconnectSettled(this.connection);
  }
}
