// Regression tests for what the chaos suite's hostile-input and webhook scenarios found
// (chaos/hostile-inputs.chaos.ts, chaos/webhooks.chaos.ts): a server that takes the connection
// and stalls is not retried; webhook secrets rotate with two signatures.
import { randomBytes } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type RequestListener } from "node:http";
import type { AddressInfo, LookupFunction } from "node:net";
import { Webhook } from "standardwebhooks";
import { afterAll, describe, expect, it } from "vitest";
import { ClipguardError, isClipguardError } from "../src/shared/errors.js";
import { fetchImageUrl, type UrlFetchOptions } from "../src/worker/url-fetcher.js";
import { parseWebhookSecrets, sendWebhook, type WebhookOptions } from "../src/worker/webhook-sender.js";

const servers: ReturnType<typeof createServer>[] = [];

async function serve(handler: RequestListener): Promise<{ origin: string; connections: () => number }> {
  const server = createServer(handler);
  servers.push(server);
  let connections = 0;
  server.on("connection", () => connections++);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connections: () => connections };
}

afterAll(async () => {
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
});

async function errorOf(promise: Promise<unknown>): Promise<ClipguardError> {
  try {
    await promise;
  } catch (err) {
    if (isClipguardError(err)) return err;
    throw err;
  }
  throw new Error("expected a ClipguardError");
}

const fetchOpts: UrlFetchOptions = { maxBytes: 1_000_000, timeoutMs: 300, maxRedirects: 0, allowPrivateAddresses: true };

describe("a server that takes the connection and stalls (chaos: retried 5 times as a timeout)", () => {
  it("never answering is CLIPGUARD_E_URL_STALLED, not retryable", async () => {
    const silent = await serve(() => undefined);
    const started = Date.now();
    const err = await errorOf(fetchImageUrl(`${silent.origin}/x.png`, fetchOpts));
    expect(err).toMatchObject({ code: "CLIPGUARD_E_URL_STALLED", retryable: false });
    expect(Date.now() - started).toBeLessThan(300 + 1000);
  });

  it("a body that never ends is CLIPGUARD_E_URL_STALLED", async () => {
    const trickle = await serve((_req, res) => {
      res.writeHead(200, { "content-type": "image/png" });
      const timer = setInterval(() => res.write("x"), 50);
      res.on("close", () => clearInterval(timer));
    });
    const err = await errorOf(fetchImageUrl(`${trickle.origin}/x.png`, fetchOpts));
    expect(err.code).toBe("CLIPGUARD_E_URL_STALLED");
  });

  it("a DNS lookup that never answers is still CLIPGUARD_E_URL_TIMEOUT, retryable", async () => {
    const hanging: LookupFunction = () => undefined;
    const err = await errorOf(fetchImageUrl("http://slow-dns.example/x.png", { ...fetchOpts, lookup: hanging }));
    expect(err).toMatchObject({ code: "CLIPGUARD_E_URL_TIMEOUT", retryable: true });
  });

  it("a webhook receiver that stalls is still retried, up to maxAttempts", async () => {
    const silent = await serve(() => undefined);
    const opts: WebhookOptions = { secret: `whsec_${randomBytes(24).toString("base64")}`, msgId: "job-1", timeoutMs: 200, maxAttempts: 3, backoffMs: 10, allowPrivateAddresses: true };
    const err = await errorOf(sendWebhook(`${silent.origin}/hook`, { ok: true }, opts));
    expect(err).toMatchObject({ code: "CLIPGUARD_E_WEBHOOK", retryable: true });
    expect(silent.connections()).toBe(3);
  });
});

describe("webhook secret rotation", () => {
  const OLD = `whsec_${randomBytes(32).toString("base64")}`;
  const NEW = `whsec_${randomBytes(32).toString("base64")}`;

  it.each([
    ["one", "a", ["a"]],
    ["comma-separated", "a,b", ["a", "b"]],
    ["space-separated", "a b", ["a", "b"]],
    ["mixed, with blanks", " a ,\n b ,", ["a", "b"]],
  ])("reads a %s list", (_name, text, list) => {
    expect(parseWebhookSecrets(text)).toEqual(list);
  });

  it("signs with every secret, so a receiver holding either one verifies", async () => {
    const deliveries: { headers: IncomingHttpHeaders; body: string }[] = [];
    const receiver = await serve((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        deliveries.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
        res.writeHead(204).end();
      });
    });
    const opts: WebhookOptions = { secret: `${OLD}, ${NEW}`, msgId: "job-7", timeoutMs: 1000, maxAttempts: 1, backoffMs: 10, allowPrivateAddresses: true };
    await sendWebhook(`${receiver.origin}/hook`, { jobId: "job-7", decision: "allow" }, opts);
    const [delivery] = deliveries;
    const headers = {
      "webhook-id": String(delivery?.headers["webhook-id"]),
      "webhook-timestamp": String(delivery?.headers["webhook-timestamp"]),
      "webhook-signature": String(delivery?.headers["webhook-signature"]),
    };
    expect(headers["webhook-signature"].split(" ")).toHaveLength(2);
    for (const secret of [OLD, NEW]) expect(new Webhook(secret).verify(delivery?.body ?? "", headers)).toEqual({ jobId: "job-7", decision: "allow" });
    expect(() => new Webhook(`whsec_${randomBytes(32).toString("base64")}`).verify(delivery?.body ?? "", headers)).toThrow();
  });

  it("names a bad secret in the list by position, never by value", async () => {
    const err = await errorOf(sendWebhook("http://127.0.0.1:9/hook", {}, { secret: `${OLD},not*base64`, msgId: "j", timeoutMs: 100, maxAttempts: 1, backoffMs: 1 }));
    expect(err.code).toBe("CLIPGUARD_E_CONFIG");
    expect(err.message).toContain("number 2");
    expect(err.message).not.toContain("not*base64");
  });

  it("refuses an empty list", async () => {
    const err = await errorOf(sendWebhook("http://127.0.0.1:9/hook", {}, { secret: " , ", msgId: "j", timeoutMs: 100, maxAttempts: 1, backoffMs: 1 }));
    expect(err.code).toBe("CLIPGUARD_E_CONFIG");
  });
});
