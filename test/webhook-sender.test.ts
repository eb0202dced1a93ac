import { randomBytes } from "node:crypto";
import { createServer, type IncomingHttpHeaders } from "node:http";
import { isIP, type AddressInfo, type LookupFunction } from "node:net";
import { Webhook, WebhookVerificationError } from "standardwebhooks";
import { afterAll, describe, expect, it } from "vitest";
import { isClipguardError, type ErrorCode } from "../src/shared/errors.js";
import { sendWebhook, type WebhookOptions } from "../src/worker/webhook-sender.js";

const secret = `whsec_${randomBytes(24).toString("base64")}`;

interface Delivery {
  headers: Record<string, string>;
  body: string;
}

interface Receiver {
  url: string;
  port: number;
  connections: number;
  deliveries: Delivery[];
}

const servers: ReturnType<typeof createServer>[] = [];

function flatHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return flat;
}

/** A receiver on 127.0.0.1 answering with `statuses` in turn (the last one repeats). */
async function startReceiver(statuses: number[]): Promise<Receiver> {
  const state: Receiver = { url: "", port: 0, connections: 0, deliveries: [] };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      state.deliveries.push({ headers: flatHeaders(req.headers), body: Buffer.concat(chunks).toString("utf8") });
      const status = statuses[Math.min(state.deliveries.length, statuses.length) - 1] ?? 200;
      res.writeHead(status).end();
    });
  });
  servers.push(server);
  server.on("connection", () => {
    state.connections++;
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.port = (server.address() as AddressInfo).port;
  state.url = `http://127.0.0.1:${state.port}/hooks/clipguard`;
  return state;
}

afterAll(async () => {
  await Promise.all(
    servers.map(
      (server) =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    ),
  );
});

const payload = { jobId: "job-42", decision: "block", policies: [{ id: "nsfw", score: 0.91 }] };

const base: WebhookOptions = {
  secret,
  msgId: "job-42",
  timeoutMs: 1000,
  maxAttempts: 3,
  backoffMs: 10,
  allowPrivateAddresses: true,
};

async function sendError(url: string, opts: WebhookOptions): Promise<{ code: ErrorCode; retryable: boolean }> {
  try {
    await sendWebhook(url, payload, opts);
  } catch (err) {
    if (isClipguardError(err)) return { code: err.code, retryable: err.retryable };
    throw err;
  }
  throw new Error(`expected the webhook to ${url} to fail`);
}

describe("sendWebhook", () => {
  it("delivers a signed JSON message that the receiver verifies", async () => {
    const receiver = await startReceiver([204]);
    const result = await sendWebhook(receiver.url, payload, base);
    expect(result).toEqual({ attempts: 1, status: 204 });

    const [delivery] = receiver.deliveries;
    expect(delivery?.headers["content-type"]).toBe("application/json");
    expect(delivery?.headers["webhook-id"]).toBe("job-42");
    expect(new Webhook(secret).verify(delivery?.body ?? "", delivery?.headers ?? {})).toEqual(payload);
  });

  it("produces a signature that fails verification once the body is tampered with", async () => {
    const receiver = await startReceiver([200]);
    await sendWebhook(receiver.url, payload, base);
    const [delivery] = receiver.deliveries;
    const tampered = (delivery?.body ?? "").replace('"block"', '"allow"');
    expect(tampered).not.toBe(delivery?.body);
    expect(() => new Webhook(secret).verify(tampered, delivery?.headers ?? {})).toThrow(WebhookVerificationError);
    const otherSecret = `whsec_${randomBytes(24).toString("base64")}`;
    expect(() => new Webhook(otherSecret).verify(delivery?.body ?? "", delivery?.headers ?? {})).toThrow(
      WebhookVerificationError,
    );
  });

  it("stamps webhook-timestamp from the injected clock", async () => {
    const receiver = await startReceiver([200]);
    const at = new Date(Date.now() - 60_000);
    await sendWebhook(receiver.url, payload, { ...base, now: () => at });
    const [delivery] = receiver.deliveries;
    expect(delivery?.headers["webhook-timestamp"]).toBe(String(Math.floor(at.getTime() / 1000)));
    expect(new Webhook(secret).verify(delivery?.body ?? "", delivery?.headers ?? {})).toEqual(payload);
  });

  it("retries after a 500 with the same webhook-id, then succeeds", async () => {
    const receiver = await startReceiver([500, 200]);
    const result = await sendWebhook(receiver.url, payload, base);
    expect(result).toEqual({ attempts: 2, status: 200 });
    expect(receiver.deliveries.map((d) => d.headers["webhook-id"])).toEqual(["job-42", "job-42"]);
    for (const delivery of receiver.deliveries) {
      expect(new Webhook(secret).verify(delivery.body, delivery.headers)).toEqual(payload);
    }
  });

  it("retries a 429", async () => {
    const receiver = await startReceiver([429, 200]);
    expect(await sendWebhook(receiver.url, payload, base)).toEqual({ attempts: 2, status: 200 });
  });

  it("gives up after maxAttempts with CLIPGUARD_E_WEBHOOK (retryable)", async () => {
    const receiver = await startReceiver([503]);
    const err = await sendError(receiver.url, { ...base, maxAttempts: 3 });
    expect(err).toEqual({ code: "CLIPGUARD_E_WEBHOOK", retryable: true });
    expect(receiver.deliveries).toHaveLength(3);
  });

  it("does not retry a 4xx other than 408/429", async () => {
    const receiver = await startReceiver([400, 200]);
    const err = await sendError(receiver.url, base);
    expect(err.code).toBe("CLIPGUARD_E_WEBHOOK");
    expect(receiver.deliveries).toHaveLength(1);
  });

  it("retries a receiver that is not listening, then gives up", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const err = await sendError(`http://127.0.0.1:${port}/hook`, { ...base, maxAttempts: 2 });
    expect(err.code).toBe("CLIPGUARD_E_WEBHOOK");
  });

  it("times out a receiver that never answers", async () => {
    const silent = createServer(() => {
      // never answers
    });
    servers.push(silent);
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const { port } = silent.address() as AddressInfo;
    const err = await sendError(`http://127.0.0.1:${port}/hook`, { ...base, timeoutMs: 300, maxAttempts: 1 });
    expect(err.code).toBe("CLIPGUARD_E_WEBHOOK");
  });

  it("refuses a loopback callback URL without the private allowance, without connecting", async () => {
    const receiver = await startReceiver([200]);
    const err = await sendError(receiver.url, { ...base, allowPrivateAddresses: false });
    expect(err).toEqual({ code: "CLIPGUARD_E_URL_REFUSED", retryable: false });
    expect(receiver.connections).toBe(0);
  });

  it("refuses a hostname that resolves to a private address, without retrying", async () => {
    const receiver = await startReceiver([200]);
    const calls: string[] = [];
    const lookup: LookupFunction = (hostname, options, callback) => {
      calls.push(hostname);
      if (options.all) callback(null, [{ address: "127.0.0.1", family: isIP("127.0.0.1") }]);
      else callback(null, "127.0.0.1", 4);
    };
    const err = await sendError(`http://hooks.example.com:${receiver.port}/hook`, {
      ...base,
      allowPrivateAddresses: false,
      lookup,
    });
    expect(err.code).toBe("CLIPGUARD_E_URL_REFUSED");
    expect(calls).toEqual(["hooks.example.com"]);
    expect(receiver.connections).toBe(0);
  });

  it("reports a malformed secret as a configuration error", async () => {
    const receiver = await startReceiver([200]);
    const err = await sendError(receiver.url, { ...base, secret: "whsec_%%%not-base64%%%" });
    expect(err.code).toBe("CLIPGUARD_E_CONFIG");
    expect(receiver.connections).toBe(0);
  });
});
