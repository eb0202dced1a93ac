/**
 * A loopback webhook receiver for the chaos scenarios: verifies every delivery's Standard Webhooks
 * signature, records it under its `webhook-id`, and answers 204 after a delay of its choosing
 * (a slow receiver keeps jobs in flight, so a killed worker takes some with it).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Webhook } from "standardwebhooks";

export interface Delivery {
  webhookId: string;
  /** `jobId` of the body (must equal the webhook-id). */
  jobId: string | undefined;
  decision: string | undefined;
  /** The raw body (the verdict JSON). */
  body: string;
  receivedAt: number;
}

export interface WebhookReceiver {
  /** The URL to give jobs as callbackUrl. */
  url: string;
  /** Every verified delivery, in arrival order. */
  readonly deliveries: readonly Delivery[];
  /** Deliveries whose signature did not verify (never recorded as deliveries). */
  rejected(): number;
  /** Deliveries per webhook-id. */
  countsById(): Map<string, number>;
  close(): Promise<void>;
}

export interface WebhookReceiverOptions {
  /** The workers' CLIPGUARD_WEBHOOK_SECRET. */
  secret: string;
  /** Milliseconds to wait before answering each delivery. @default () => 0 */
  delayMs?: () => number;
}

export async function startWebhookReceiver(options: WebhookReceiverOptions): Promise<WebhookReceiver> {
  const verifier = new Webhook(options.secret);
  const deliveries: Delivery[] = [];
  let rejected = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const headers = {
        "webhook-id": String(req.headers["webhook-id"] ?? ""),
        "webhook-timestamp": String(req.headers["webhook-timestamp"] ?? ""),
        "webhook-signature": String(req.headers["webhook-signature"] ?? ""),
      };
      let payload: { jobId?: unknown; decision?: unknown };
      try {
        payload = verifier.verify(body, headers) as typeof payload;
      } catch {
        rejected++;
        res.writeHead(401).end();
        return;
      }
      deliveries.push({
        webhookId: headers["webhook-id"],
        jobId: typeof payload.jobId === "string" ? payload.jobId : undefined,
        decision: typeof payload.decision === "string" ? payload.decision : undefined,
        body,
        receivedAt: Date.now(),
      });
      const delay = options.delayMs?.() ?? 0;
      setTimeout(() => res.writeHead(204).end(), delay);
    });
  });
  // the worker may be killed mid-delivery: a reset socket is expected, not an error
  server.on("clientError", (_err, socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    deliveries,
    rejected: () => rejected,
    countsById() {
      const counts = new Map<string, number>();
      for (const d of deliveries) counts.set(d.webhookId, (counts.get(d.webhookId) ?? 0) + 1);
      return counts;
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
