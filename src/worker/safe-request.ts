/**
 * One HTTP(S) request to a user-supplied URL, made so that it can only reach addresses the address
 * policy permits. Shared by the image URL fetcher and the webhook sender; neither follows redirects
 * here (the fetcher re-enters for each hop, so every hop is checked again).
 *
 * Three layers, each on the address that is actually used:
 *  1. the URL: http/https only, no userinfo, IP literals and localhost names checked before any
 *     DNS query or socket;
 *  2. DNS: the hostname is resolved once (with the injected `lookup` when given) and every address
 *     returned is checked; the connection is then pinned to exactly those addresses, so a second
 *     resolution cannot hand the socket something else (DNS rebinding);
 *  3. connect: request-filtering-agent checks the pinned addresses again as the socket dials.
 *
 * Errors: CLIPGUARD_E_URL_REFUSED (policy); when the `deadline` signal fires,
 * CLIPGUARD_E_URL_TIMEOUT before the TCP connection is up (DNS, connect: retryable) and
 * CLIPGUARD_E_URL_STALLED after it (the server holds the connection without answering in full: not
 * retryable, a tarpit would hold a job slot for the whole deadline on every attempt);
 * CLIPGUARD_E_URL_FETCH (anything else on the network). Messages name the URL by origin and path
 * only: no userinfo, query or fragment, which is where tokens live.
 */
import type { IncomingMessage, OutgoingHttpHeaders } from "node:http";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { isIP, type LookupFunction } from "node:net";
import { RequestFilteringHttpAgent, RequestFilteringHttpsAgent } from "request-filtering-agent";
import { ClipguardError, isClipguardError } from "../shared/errors.js";
import {
  addressRefusal,
  allowlistedAddresses,
  isAllowedHostname,
  isLocalhostName,
  type AddressPolicy,
} from "./address-policy.js";

export type { AddressPolicy } from "./address-policy.js";
export type { LookupFunction } from "node:net";

/** Options of {@link safeRequest}. */
export interface SafeRequestOptions {
  method: "GET" | "POST";
  headers: OutgoingHttpHeaders;
  body?: Buffer;
  policy: AddressPolicy;
  /** DNS resolver, called as `lookup(hostname, {all: true}, cb)`. @default dns.lookup */
  lookup?: LookupFunction;
  /**
   * Aborts the request (DNS, connect, headers and — for the caller reading it — the body). A request
   * cut short by it fails with CLIPGUARD_E_URL_TIMEOUT before the connection is up, and with
   * CLIPGUARD_E_URL_STALLED after.
   */
  deadline: AbortSignal;
}

/** The URL as it may appear in messages and logs: origin and path, never userinfo, query or fragment. */
export function describeUrl(url: URL): string {
  return url.protocol === "http:" || url.protocol === "https:" ? `${url.origin}${url.pathname}` : url.protocol;
}

/** Parses a user-supplied URL; an unparseable one is a refusal (and is not echoed back). */
export function parseUserUrl(raw: string): URL {
  try {
    return new URL(raw);
  } catch {
    throw new ClipguardError("CLIPGUARD_E_URL_REFUSED", "the URL is not a valid absolute URL");
  }
}

/** URL hostname without the brackets WHATWG URL keeps around IPv6 literals. */
function bareHostname(url: URL): string {
  return url.hostname.startsWith("[") && url.hostname.endsWith("]") ? url.hostname.slice(1, -1) : url.hostname;
}

/**
 * The checks that need no network: scheme, userinfo, and — unless the hostname is allowlisted —
 * IP literals and localhost names. WHATWG URL has already normalised `http://2130706433/`,
 * `http://0x7f.1/`, `http://0177.0.0.1/` and `http://127.1/` to `127.0.0.1`.
 */
export function checkUrl(url: URL, policy: AddressPolicy): void {
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ClipguardError(
      "CLIPGUARD_E_URL_REFUSED",
      `only http and https URLs can be fetched, not ${url.protocol}`,
    );
  }
  if (url.username !== "" || url.password !== "") {
    throw new ClipguardError(
      "CLIPGUARD_E_URL_REFUSED",
      `URLs with credentials (user:password@) are refused: ${describeUrl(url)}`,
    );
  }
  const host = bareHostname(url);
  if (isAllowedHostname(host, policy)) return;
  if (isIP(host) !== 0) {
    const refusal = addressRefusal(host, policy);
    if (refusal !== undefined) {
      throw new ClipguardError("CLIPGUARD_E_URL_REFUSED", `${describeUrl(url)} points at ${refusal}, which is not allowed`);
    }
  } else if (isLocalhostName(host) && !policy.allowPrivateAddresses) {
    throw new ClipguardError("CLIPGUARD_E_URL_REFUSED", `${describeUrl(url)} names the local host, which is not allowed`);
  }
}

function abortable<T>(deadline: AbortSignal, start: (resolve: (v: T) => void, reject: (e: unknown) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (deadline.aborted) {
      reject(deadline.reason);
      return;
    }
    const onAbort = (): void => reject(deadline.reason);
    deadline.addEventListener("abort", onAbort, { once: true });
    start(
      (v) => {
        deadline.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        deadline.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/** Resolves `hostname` to every address it has; an IP literal resolves to itself. */
async function resolve(hostname: string, lookup: LookupFunction, deadline: AbortSignal): Promise<LookupAddress[]> {
  const family = isIP(hostname);
  if (family !== 0) return [{ address: hostname, family }];
  return abortable<LookupAddress[]>(deadline, (ok, fail) => {
    lookup(hostname, { all: true }, (err, address, fam) => {
      if (err) fail(err);
      // an injected resolver may ignore `all` and answer with a single address
      else if (Array.isArray(address)) ok(address);
      else ok([{ address, family: fam ?? isIP(address) }]);
    });
  });
}

/** A resolver that answers only with the addresses already resolved and checked. */
function pinnedLookup(addresses: readonly LookupAddress[]): LookupFunction {
  return (_hostname, options, callback) => {
    const first = addresses[0];
    if (options.all) callback(null, [...addresses]);
    else if (first !== undefined) callback(null, first.address, first.family);
    else callback(Object.assign(new Error("no address to connect to"), { code: "ENOTFOUND" }), "");
  };
}

/**
 * request-filtering-agent (3.x) reports a refusal as a plain `Error` — no class of its own, no
 * `code` — whose message reads "DNS lookup <ip>(family:…, host:…) is not allowed. Because, …".
 * Node's own network errors always carry a string `code`. This is the one place that looks at the
 * agent's message text; a test pins the shape. Our own checks run first and throw typed errors, so
 * this only fires if the agent is ever stricter than the address policy.
 */
export function isFilteringAgentRefusal(err: unknown): boolean {
  return (
    err instanceof Error &&
    !isClipguardError(err) &&
    (err as NodeJS.ErrnoException).code === undefined &&
    /^DNS lookup .+ is not allowed\. Because/.test(err.message)
  );
}

function toRequestError(err: unknown, url: URL, deadline: AbortSignal, connected: boolean): ClipguardError {
  if (isClipguardError(err)) return err;
  if (deadline.aborted) {
    return connected
      ? new ClipguardError("CLIPGUARD_E_URL_STALLED", `${describeUrl(url)} accepted the connection but did not send the whole response in time`, {
          cause: err,
        })
      : new ClipguardError("CLIPGUARD_E_URL_TIMEOUT", `${describeUrl(url)} could not be resolved or connected to in time`, { cause: err });
  }
  if (isFilteringAgentRefusal(err)) {
    return new ClipguardError(
      "CLIPGUARD_E_URL_REFUSED",
      `${describeUrl(url)} resolves to an address that is not allowed`,
      { cause: err },
    );
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return new ClipguardError(
    "CLIPGUARD_E_URL_FETCH",
    `${describeUrl(url)} could not be reached${typeof code === "string" ? ` (${code})` : ""}`,
    { cause: err },
  );
}

/** Converts a failure while reading a response body into the same codes as {@link safeRequest}. */
export function toBodyError(err: unknown, url: URL, deadline: AbortSignal): ClipguardError {
  return toRequestError(err, url, deadline, true);
}

/**
 * Sends one request and resolves with the response once its headers have arrived. The caller owns
 * the response: read it to the end or `destroy()` it. Redirects are returned, not followed.
 */
export async function safeRequest(url: URL, opts: SafeRequestOptions): Promise<IncomingMessage> {
  const { policy, deadline } = opts;
  checkUrl(url, policy);
  const hostname = bareHostname(url);
  const bypass = isAllowedHostname(hostname, policy);

  let addresses: LookupAddress[];
  try {
    addresses = await resolve(hostname, opts.lookup ?? (dnsLookup as LookupFunction), deadline);
  } catch (err) {
    throw toRequestError(err, url, deadline, false);
  }
  if (!bypass) {
    for (const { address } of addresses) {
      const refusal = addressRefusal(address, policy);
      if (refusal !== undefined) {
        // The address itself stays out of the message: it would tell the caller what internal
        // names resolve to.
        throw new ClipguardError(
          "CLIPGUARD_E_URL_REFUSED",
          `${describeUrl(url)} resolves to ${refusal}, which is not allowed`,
        );
      }
    }
  }

  const agentOptions = {
    keepAlive: false,
    allowPrivateIPAddress: bypass || policy.allowPrivateAddresses,
    // Exact addresses only: the agent matches CIDRs with ipaddr's match(), which throws (and the
    // agent console.warns) whenever the families differ.
    allowIPAddressList: bypass ? [] : allowlistedAddresses(addresses.map((a) => a.address), policy),
  };
  const isHttps = url.protocol === "https:";
  const agent = isHttps ? new RequestFilteringHttpsAgent(agentOptions) : new RequestFilteringHttpAgent(agentOptions);
  const send = isHttps ? httpsRequest : httpRequest;

  return new Promise<IncomingMessage>((resolvePromise, reject) => {
    let connected = false;
    const req = send(
      {
        protocol: url.protocol,
        hostname,
        port: url.port === "" ? undefined : Number(url.port),
        path: `${url.pathname}${url.search}`,
        method: opts.method,
        headers: opts.body === undefined ? opts.headers : { ...opts.headers, "content-length": opts.body.length },
        agent,
        lookup: pinnedLookup(addresses),
        signal: deadline,
      },
      (res) => {
        // The request's signal only tears the socket down; make the body stream fail too.
        const onAbort = (): void => {
          if (!res.complete) res.destroy(deadline.reason instanceof Error ? deadline.reason : new Error("deadline"));
        };
        deadline.addEventListener("abort", onAbort, { once: true });
        res.once("close", () => {
          deadline.removeEventListener("abort", onAbort);
          agent.destroy();
        });
        resolvePromise(res);
      },
    );
    req.on("socket", (socket) => {
      if (!socket.connecting) connected = true;
      else {
        socket.once("connect", () => {
          connected = true;
        });
      }
    });
    req.on("error", (err) => {
      agent.destroy();
      reject(toRequestError(err, url, deadline, connected));
    });
    req.end(opts.body);
  });
}
