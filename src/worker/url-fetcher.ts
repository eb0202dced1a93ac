/**
 * Downloads the image of an `{url}` job: GET with a byte limit, one deadline for the whole fetch, and
 * redirects followed by hand so that every hop goes through the same address checks as the first
 * (see safe-request.ts).
 *
 * Outcomes: the bytes, the final URL and the Content-Type; or a ClipguardError:
 *  - CLIPGUARD_E_URL_REFUSED    not http(s), userinfo, or a non-public address (any hop)
 *  - CLIPGUARD_E_URL_REDIRECTS  more than `maxRedirects` redirects
 *  - CLIPGUARD_E_URL_STATUS     a 4xx answer (except 408 and 429), or a 3xx that is not a usable redirect
 *  - CLIPGUARD_E_URL_FETCH      5xx, 408, 429, or a network fault (retryable)
 *  - CLIPGUARD_E_URL_TIMEOUT    the deadline passed during DNS or connect (retryable)
 *  - CLIPGUARD_E_URL_STALLED    the deadline passed once the server had the connection: no headers,
 *                               or a body that never ends (a tarpit; not retryable)
 *  - CLIPGUARD_E_IMAGE_TOO_LARGE Content-Length or the streamed body exceeds `maxBytes`
 */
import type { IncomingMessage } from "node:http";
import { ClipguardError } from "../shared/errors.js";
import {
  describeUrl,
  parseUserUrl,
  safeRequest,
  toBodyError,
  type AddressPolicy,
  type LookupFunction,
} from "./safe-request.js";

/** Options of {@link fetchImageUrl}. */
export interface UrlFetchOptions {
  /** Largest body accepted, in bytes. */
  maxBytes: number;
  /** One deadline for the whole fetch: every hop's DNS, connect, headers and body. */
  timeoutMs: number;
  /** Redirects followed before giving up with CLIPGUARD_E_URL_REDIRECTS; 0 follows none. */
  maxRedirects: number;
  /**
   * Permit loopback and private addresses (tests, internal deployments). Scheme, userinfo and
   * redirect rules still apply.
   * @default false
   */
  allowPrivateAddresses?: boolean;
  /**
   * Hostnames and IPs/CIDRs that bypass the address filter.
   * @default []
   */
  allowedHosts?: string[];
  /** DNS resolver, for tests. @default dns.lookup */
  lookup?: LookupFunction;
  /** @default "clipguard" */
  userAgent?: string;
}

/** What {@link fetchImageUrl} returns. */
export interface FetchedImage {
  bytes: Buffer;
  /** The URL the bytes came from, after redirects. */
  finalUrl: string;
  contentType?: string;
}

const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);
/** 4xx answers that mean "try again later" rather than "this URL is wrong". */
const TRANSIENT_CLIENT_STATUSES: ReadonlySet<number> = new Set([408, 429]);

/**
 * Fetches `url` under the address policy and limits in `opts`.
 * @throws ClipguardError with one of the codes listed at the top of this file.
 */
export async function fetchImageUrl(url: string, opts: UrlFetchOptions): Promise<FetchedImage> {
  const policy: AddressPolicy = {
    allowPrivateAddresses: opts.allowPrivateAddresses ?? false,
    allowedHosts: opts.allowedHosts ?? [],
  };
  const controller = new AbortController();
  const timer = setTimeout(() => {
    controller.abort(new Error(`deadline of ${opts.timeoutMs} ms passed`));
  }, opts.timeoutMs);
  const deadline = controller.signal;

  try {
    let current = parseUserUrl(url);
    for (let redirects = 0; ; redirects++) {
      const res = await safeRequest(current, {
        method: "GET",
        headers: { "user-agent": opts.userAgent ?? "clipguard", accept: "image/*" },
        policy,
        lookup: opts.lookup,
        deadline,
      });
      const status = res.statusCode ?? 0;

      if (REDIRECT_STATUSES.has(status)) {
        const location = res.headers.location;
        res.destroy();
        if (location === undefined || location === "") {
          throw new ClipguardError(
            "CLIPGUARD_E_URL_STATUS",
            `${describeUrl(current)} answered ${status} without a Location header`,
          );
        }
        if (redirects >= opts.maxRedirects) {
          throw new ClipguardError(
            "CLIPGUARD_E_URL_REDIRECTS",
            `${describeUrl(parseUserUrl(url))} redirected more than ${opts.maxRedirects} times`,
          );
        }
        current = resolveLocation(location, current);
        continue;
      }

      if (status < 200 || status > 299) {
        res.destroy();
        throw statusError(status, current);
      }
      const bytes = await readBody(res, current, opts.maxBytes, deadline);
      const contentType = res.headers["content-type"];
      return { bytes, finalUrl: current.href, ...(contentType === undefined ? {} : { contentType }) };
    }
  } finally {
    clearTimeout(timer);
  }
}

function resolveLocation(location: string, base: URL): URL {
  try {
    return new URL(location, base);
  } catch {
    throw new ClipguardError("CLIPGUARD_E_URL_REFUSED", `${describeUrl(base)} redirected to an invalid URL`);
  }
}

function statusError(status: number, url: URL): ClipguardError {
  if (status >= 500 || TRANSIENT_CLIENT_STATUSES.has(status)) {
    return new ClipguardError("CLIPGUARD_E_URL_FETCH", `${describeUrl(url)} answered ${status}`);
  }
  return new ClipguardError("CLIPGUARD_E_URL_STATUS", `${describeUrl(url)} answered ${status}`);
}

/** Reads the body, refusing it as soon as it is known to exceed `maxBytes`. */
async function readBody(res: IncomingMessage, url: URL, maxBytes: number, deadline: AbortSignal): Promise<Buffer> {
  const tooLarge = (): ClipguardError =>
    new ClipguardError("CLIPGUARD_E_IMAGE_TOO_LARGE", `${describeUrl(url)} is larger than ${maxBytes} bytes`);

  const declared = Number(res.headers["content-length"]);
  if (Number.isFinite(declared) && declared > maxBytes) {
    res.destroy();
    throw tooLarge();
  }

  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBytes) {
        res.destroy();
        throw tooLarge();
      }
      chunks.push(chunk);
    }
  } catch (err) {
    throw toBodyError(err, url, deadline);
  }
  if (!res.complete) {
    throw new ClipguardError("CLIPGUARD_E_URL_FETCH", `${describeUrl(url)} closed the connection mid-body`);
  }
  return Buffer.concat(chunks, total);
}
