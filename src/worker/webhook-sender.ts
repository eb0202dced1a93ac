/**
 * Delivers a verdict to a job's callbackUrl as a Standard Webhooks message: a JSON POST carrying
 * `webhook-id` (the job id, the same on every attempt so receivers can deduplicate),
 * `webhook-timestamp` and `webhook-signature` (HMAC-SHA256 via the `standardwebhooks` package).
 * Each attempt is signed afresh with its own timestamp, so a late retry stays inside the receiver's
 * timestamp tolerance. Several secrets (rotation) give several space-separated signatures in the
 * one header, as the spec allows: a receiver holding any one of the secrets verifies the message.
 *
 * The callback URL goes through the same address policy as image URLs (safe-request.ts). Redirects
 * are not followed: a receiver answers 2xx or the delivery failed.
 *
 * Retries with exponential backoff (backoffMs, 2×backoffMs, …) on network faults, timeouts (a
 * receiver that stalls included: it is the customer's endpoint, not a tarpit chosen by a job), 5xx,
 * 408 and 429. Outcomes: `{attempts, status}` on 2xx; otherwise a ClipguardError —
 * CLIPGUARD_E_URL_REFUSED (the URL may not be called; never retried) or CLIPGUARD_E_WEBHOOK.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { Webhook } from "standardwebhooks";
import { ClipguardError } from "../shared/errors.js";
import { describeUrl, parseUserUrl, safeRequest, type AddressPolicy, type LookupFunction } from "./safe-request.js";

/** Options of {@link sendWebhook}. */
export interface WebhookOptions {
  /**
   * The signing secret, base64 with the optional `whsec_` prefix (Standard Webhooks); or several,
   * separated by commas or whitespace, to rotate secrets: every message is signed with each.
   */
  secret: string | readonly string[];
  /** The `webhook-id` header: the job id. */
  msgId: string;
  /** Time allowed for each attempt (DNS, connect, response headers). */
  timeoutMs: number;
  /** Attempts in all, the first included; at least 1. */
  maxAttempts: number;
  /** Wait before the second attempt; doubles for each one after. */
  backoffMs: number;
  /** @default false */
  allowPrivateAddresses?: boolean;
  /** Hostnames and IPs/CIDRs that bypass the address filter. @default [] */
  allowedHosts?: string[];
  /** DNS resolver, for tests. @default dns.lookup */
  lookup?: LookupFunction;
  /** Clock for `webhook-timestamp`. @default () => new Date() */
  now?: () => Date;
  /** @default "clipguard" */
  userAgent?: string;
}

/** What {@link sendWebhook} returns once the receiver accepted the message. */
export interface WebhookResult {
  attempts: number;
  status: number;
}

/**
 * The secrets of CLIPGUARD_WEBHOOK_SECRET: one, or several separated by commas or whitespace
 * (base64 and the `whsec_` prefix contain neither).
 */
export function parseWebhookSecrets(secret: string | readonly string[]): string[] {
  const list = typeof secret === "string" ? secret.split(/[\s,]+/) : [...secret];
  return list.map((s) => s.trim()).filter((s) => s.length > 0);
}

/**
 * One signer per secret, in the order given.
 * @throws ClipguardError CLIPGUARD_E_CONFIG when there is no secret or one is not base64
 */
export function webhookSigners(secret: string | readonly string[]): Webhook[] {
  const secrets = parseWebhookSecrets(secret);
  if (secrets.length === 0) throw new ClipguardError("CLIPGUARD_E_CONFIG", "the webhook secret is empty");
  return secrets.map((value, i) => {
    try {
      return new Webhook(value);
    } catch (err) {
      // the secret stays out of the message
      const which = secrets.length > 1 ? `webhook secret number ${i + 1}` : "the webhook secret";
      throw new ClipguardError("CLIPGUARD_E_CONFIG", `${which} is not a base64 (whsec_…) secret`, { cause: err });
    }
  });
}

/** Answers after which a later attempt may succeed. */
function isRetryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

type AttemptOutcome = { ok: true; status: number } | { ok: false; retry: boolean; reason: string; cause?: unknown };

/**
 * POSTs `payload` as signed JSON to `url`, retrying transient failures.
 * @throws ClipguardError CLIPGUARD_E_URL_REFUSED or CLIPGUARD_E_WEBHOOK.
 */
export async function sendWebhook(url: string, payload: unknown, opts: WebhookOptions): Promise<WebhookResult> {
  const signers = webhookSigners(opts.secret);
  const target = parseUserUrl(url);
  const policy: AddressPolicy = {
    allowPrivateAddresses: opts.allowPrivateAddresses ?? false,
    allowedHosts: opts.allowedHosts ?? [],
  };
  const body = JSON.stringify(payload);
  const bodyBytes = Buffer.from(body, "utf8");
  const now = opts.now ?? (() => new Date());
  const maxAttempts = Math.max(1, Math.floor(opts.maxAttempts));

  let last: Extract<AttemptOutcome, { ok: false }> | undefined;
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    if (attempt > 1) await sleep(opts.backoffMs * 2 ** (attempt - 2));

    const timestamp = now();
    const headers = {
      "content-type": "application/json",
      "user-agent": opts.userAgent ?? "clipguard",
      "webhook-id": opts.msgId,
      "webhook-timestamp": String(Math.floor(timestamp.getTime() / 1000)),
      "webhook-signature": signers.map((signer) => signer.sign(opts.msgId, timestamp, body)).join(" "),
    };
    const outcome = await attemptOnce(target, headers, bodyBytes, policy, opts);
    if (outcome.ok) return { attempts: attempt, status: outcome.status };
    last = outcome;
    if (!outcome.retry) {
      throw new ClipguardError(
        "CLIPGUARD_E_WEBHOOK",
        `${describeUrl(target)} did not accept the webhook: ${outcome.reason} (attempt ${attempt} of ${maxAttempts})`,
        { cause: outcome.cause },
      );
    }
  }
  throw new ClipguardError(
    "CLIPGUARD_E_WEBHOOK",
    `${describeUrl(target)} did not accept the webhook after ${maxAttempts} attempts: ${last?.reason ?? "unknown"}`,
    { cause: last?.cause },
  );
}

async function attemptOnce(
  target: URL,
  headers: Record<string, string>,
  body: Buffer,
  policy: AddressPolicy,
  opts: WebhookOptions,
): Promise<AttemptOutcome> {
  const controller = new AbortController();
  const timer = setTimeout(() => {
    controller.abort(new Error(`deadline of ${opts.timeoutMs} ms passed`));
  }, opts.timeoutMs);
  try {
    const res = await safeRequest(target, {
      method: "POST",
      headers,
      body,
      policy,
      lookup: opts.lookup,
      deadline: controller.signal,
    });
    // The receiver's body is of no use to us; do not let a slow one hold the socket.
    res.destroy();
    const status = res.statusCode ?? 0;
    if (status >= 200 && status <= 299) return { ok: true, status };
    return { ok: false, retry: isRetryableStatus(status), reason: `answered ${status}` };
  } catch (err) {
    if (err instanceof ClipguardError) {
      // A refused URL will be refused again: report it as such, not as a failed delivery.
      if (err.code === "CLIPGUARD_E_URL_REFUSED") throw err;
      return { ok: false, retry: err.retryable || err.code === "CLIPGUARD_E_URL_STALLED", reason: err.message, cause: err };
    }
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
