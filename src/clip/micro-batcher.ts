/**
 * Collects items from concurrent callers into batches: a batch is run when it holds `maxBatch`
 * items, when the first item has waited `maxWaitMs` while a runner was free, or at once when a
 * runner frees up and items queued while all runners were busy (they have waited already).
 * At most `capacity` batches run at the same time (one per inference thread).
 */
export interface MicroBatcherOptions {
  /** Largest batch, in items. @default 8 */
  maxBatch: number;
  /** Longest an item waits for company while a runner is idle. @default 2 */
  maxWaitMs: number;
  /** Batches that may run at once. @default 1 */
  capacity: number;
}

interface Entry<T, R> {
  item: T;
  resolve: (result: R) => void;
  reject: (err: unknown) => void;
}

export class MicroBatcher<T, R> {
  private queue: Entry<T, R>[] = [];
  private running = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly run: (items: T[]) => Promise<R[]>,
    private readonly options: MicroBatcherOptions,
  ) {}

  add(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.pump(false);
    });
  }

  /** Items waiting for a batch. */
  get waiting(): number {
    return this.queue.length;
  }

  private pump(flush: boolean): void {
    while (this.running < this.options.capacity && this.queue.length > 0) {
      const full = this.queue.length >= this.options.maxBatch;
      if (!full && !flush && this.options.maxWaitMs > 0) {
        this.timer ??= setTimeout(() => {
          this.timer = undefined;
          this.pump(true);
        }, this.options.maxWaitMs);
        return;
      }
      if (this.timer !== undefined) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
      this.dispatch(this.queue.splice(0, this.options.maxBatch));
    }
  }

  private dispatch(batch: Entry<T, R>[]): void {
    this.running++;
    this.run(batch.map((e) => e.item))
      .then(
        (results) => {
          if (results.length !== batch.length) throw new Error(`batch of ${batch.length} returned ${results.length} results`);
          batch.forEach((e, i) => e.resolve(results[i] as R));
        },
        (err: unknown) => {
          for (const e of batch) e.reject(err);
        },
      )
      .catch((err: unknown) => {
        for (const e of batch) e.reject(err);
      })
      .finally(() => {
        this.running--;
        // whatever queued while every runner was busy has waited long enough
        this.pump(true);
      });
  }
}
