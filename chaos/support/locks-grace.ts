/**
 * The past-the-grace-period case of the shutdown scenario: a job whose image URL (a loopback
 * server) does not answer before the grace period ends. The worker must still exit once the grace
 * period is over, leaving the job to be retried: its lock expires, another worker's stalled check
 * moves it back to wait, and that worker judges it (the server answers the second request at once).
 * Runs on the bundled demo model: this case is about shutdown, not inference.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import type { JobLedger } from "./locks-jobs.js";
import { startChaosWorker, type StopResult } from "./locks-worker.js";

export const GRACE_CASE_GRACE_MS = 2000;

export interface GraceResult {
  stop: StopResult;
  /** Lines the worker logged saying the grace period was over. */
  graceOverLogged: boolean;
  /** Requests the image server received (1 from the stopped worker, 1 from the one that recovered the job). */
  requests: number;
  verdicts: number;
  decision: string | undefined;
  /** SIGTERM to the verdict from the second worker. */
  recoveredAfterMs: number;
}

export async function runGraceCase(redisUrl: string, ledger: JobLedger, env: Record<string, string>): Promise<GraceResult> {
  let requests = 0;
  let firstArrived: () => void = () => undefined;
  const arrived = new Promise<void>((resolve) => (firstArrived = resolve));
  const held: http.ServerResponse[] = [];
  const jpeg = ledger.uniqueJpeg();
  const server = http.createServer((req, res) => {
    req.resume();
    requests++;
    if (requests === 1) {
      held.push(res); // never answered: the worker that fetches it is the one being stopped
      firstArrived();
      return;
    }
    res.writeHead(200, { "content-type": "image/jpeg", "content-length": jpeg.length }).end(jpeg);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/slow.jpg`;
  const demoEnv = {
    ...env,
    CLIPGUARD_MODEL_DIR: path.resolve("models/demo"),
    CLIPGUARD_POLICIES: path.resolve("examples/policies.yaml"),
    CLIPGUARD_ALLOW_PRIVATE_URLS: "true",
    CLIPGUARD_FETCH_TIMEOUT_MS: "120000",
    CLIPGUARD_SHUTDOWN_GRACE_MS: String(GRACE_CASE_GRACE_MS),
  };
  const first = await startChaosWorker("grace-a", demoEnv);
  let second: Awaited<ReturnType<typeof startChaosWorker>> | undefined;
  try {
    const jobId = await ledger.client.enqueue({ url });
    await arrived;
    const sigterm = Date.now();
    const stop = await first.stop("SIGTERM", 60_000);
    second = await startChaosWorker("grace-b", demoEnv);
    const deadline = Date.now() + 60_000;
    let verdicts = await ledger.verdicts();
    while ((verdicts.get(jobId)?.length ?? 0) === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      verdicts = await ledger.verdicts();
    }
    const recoveredAfterMs = Date.now() - sigterm;
    const mine = verdicts.get(jobId) ?? [];
    return {
      stop,
      graceOverLogged: first.logs.some((l) => String(l["msg"]).startsWith("grace period over")),
      requests,
      verdicts: mine.length,
      decision: mine[0]?.decision,
      recoveredAfterMs,
    };
  } finally {
    await first.stop("SIGKILL");
    await second?.stop("SIGTERM", 20_000);
    for (const res of held) res.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
}
