/**
 * One autocannon run against `POST /v1/moderations`, with what autocannon's own result does not
 * give: latency per status code (accepted requests and 429s cost very different work), and the
 * job ids of the accepted requests (to check later that each got a verdict).
 */
import autocannon from "autocannon";

export interface LoadRunOptions {
  url: string;
  apiKey: string;
  connections: number;
  durationSeconds: number;
  /** The body of the n-th request (n counts over all connections). */
  body: (n: number) => string;
  /** Per-request timeout, s (a timeout counts as a failure). @default 10 */
  timeoutSeconds?: number;
}

export interface LatencyFigures {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export interface LoadRunResult {
  requests: number;
  requestsPerSecond: number;
  /** Responses by status code. */
  statuses: Record<string, number>;
  /** Responses whose status is neither 2xx nor 429. */
  unexpected: number;
  errors: number;
  timeouts: number;
  latency: { all: LatencyFigures; accepted: LatencyFigures; limited: LatencyFigures };
  acceptedJobIds: string[];
  /** Distinct error codes of the unexpected responses' bodies. */
  unexpectedCodes: string[];
}

function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? 0;
}

function figures(values: number[]): LatencyFigures {
  const sorted = [...values].sort((a, b) => a - b);
  return { count: sorted.length, p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted.at(-1) ?? 0 };
}

export async function runLoad(options: LoadRunOptions): Promise<LoadRunResult> {
  let n = 0;
  const acceptedJobIds: string[] = [];
  const unexpectedCodes = new Set<string>();
  const onResponse = (status: number, body: string) => {
    if (status === 202) {
      const jobId = (JSON.parse(body) as { jobId?: unknown }).jobId;
      if (typeof jobId === "string") acceptedJobIds.push(jobId);
    } else if (status !== 429) {
      try {
        unexpectedCodes.add(`${status} ${(JSON.parse(body) as { error?: { code?: string } }).error?.code ?? "?"}`);
      } catch {
        unexpectedCodes.add(`${status} (no JSON body)`);
      }
    }
  };
  let finish: (err: unknown, result: autocannon.Result) => void = () => {};
  const done = new Promise<autocannon.Result>((resolve, reject) => {
    finish = (err, result) => (err === null || err === undefined ? resolve(result) : reject(err instanceof Error ? err : new Error(String(err))));
  });
  const instance = autocannon(
    {
      url: `${options.url}/v1/moderations`,
      connections: options.connections,
      duration: options.durationSeconds,
      timeout: options.timeoutSeconds ?? 10,
      method: "POST",
      headers: { authorization: `Bearer ${options.apiKey}`, "content-type": "application/json" },
      requests: [
        {
          method: "POST" as const,
          setupRequest: (request: autocannon.Request) => ({ ...request, body: options.body(n++) }),
          onResponse,
        },
      ],
    },
    (err: unknown, result: autocannon.Result) => finish(err, result),
  );
  const all: number[] = [];
  const accepted: number[] = [];
  const limited: number[] = [];
  const statuses: Record<string, number> = {};
  // autocannon emits (client, statusCode, resBytes, responseTime); its types omit the client
  (instance as unknown as NodeJS.EventEmitter).on("response", (_client: unknown, status: number, _bytes: number, ms: number) => {
    statuses[status] = (statuses[status] ?? 0) + 1;
    all.push(ms);
    if (status >= 200 && status < 300) accepted.push(ms);
    else if (status === 429) limited.push(ms);
  });
  const result = await done;
  const unexpected = Object.entries(statuses)
    .filter(([status]) => !(status.startsWith("2") || status === "429"))
    .reduce((sum, [, count]) => sum + count, 0);
  return {
    requests: all.length,
    requestsPerSecond: all.length / options.durationSeconds,
    statuses,
    unexpected,
    errors: result.errors,
    timeouts: result.timeouts,
    latency: { all: figures(all), accepted: figures(accepted), limited: figures(limited) },
    acceptedJobIds,
    unexpectedCodes: [...unexpectedCodes],
  };
}
