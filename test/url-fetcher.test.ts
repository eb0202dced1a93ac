import { createServer, get, type IncomingMessage, type ServerResponse } from "node:http";
import { isIP, Socket, type AddressInfo, type LookupFunction } from "node:net";
import { RequestFilteringHttpAgent } from "request-filtering-agent";
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { isClipguardError, type ErrorCode } from "../src/shared/errors.js";
import { isFilteringAgentRefusal } from "../src/worker/safe-request.js";
import { fetchImageUrl, type UrlFetchOptions } from "../src/worker/url-fetcher.js";

interface TestServer {
  port: number;
  origin: string;
  /** TCP connections accepted so far. */
  connections: number;
  /** Request paths seen so far. */
  paths: string[];
}

const servers: ReturnType<typeof createServer>[] = [];

/** A server on 127.0.0.1 (the only address tests may talk to), closed in afterAll. */
async function startServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<TestServer> {
  const server = createServer(handler);
  servers.push(server);
  const state: TestServer = { port: 0, origin: "", connections: 0, paths: [] };
  server.on("connection", () => {
    state.connections++;
  });
  server.on("request", (req: IncomingMessage) => {
    state.paths.push(req.url ?? "");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.port = (server.address() as AddressInfo).port;
  state.origin = `http://127.0.0.1:${state.port}`;
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

/** A resolver answering from a table, as dns.lookup would; records the names asked for. */
function fakeLookup(table: Record<string, string>): LookupFunction & { calls: string[] } {
  const calls: string[] = [];
  const lookup: LookupFunction = (hostname, options, callback) => {
    calls.push(hostname);
    const address = table[hostname];
    if (address === undefined) {
      callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" }), "");
    } else if (options.all) {
      callback(null, [{ address, family: isIP(address) }]);
    } else {
      callback(null, address, isIP(address));
    }
  };
  return Object.assign(lookup, { calls });
}

const PNG_BYTES = Buffer.from("89504e470d0a1a0a0000000d49484452", "hex");

const base: UrlFetchOptions = { maxBytes: 1024, timeoutMs: 1000, maxRedirects: 3 };

async function fetchError(url: string, opts: UrlFetchOptions): Promise<{ code: ErrorCode; retryable: boolean; message: string }> {
  try {
    await fetchImageUrl(url, opts);
  } catch (err) {
    if (isClipguardError(err)) return { code: err.code, retryable: err.retryable, message: err.message };
    throw err;
  }
  throw new Error(`expected ${url} to fail`);
}

const image = await startServer((req, res) => {
  if (req.url === "/cat.png" || req.url?.startsWith("/cat.png?")) {
    res.writeHead(200, { "content-type": "image/png" }).end(PNG_BYTES);
  } else {
    res.writeHead(404).end("no such image");
  }
});

describe("fetchImageUrl: fetching", () => {
  it("returns the bytes, final URL and content type from an allowed server", async () => {
    const result = await fetchImageUrl(`${image.origin}/cat.png`, { ...base, allowPrivateAddresses: true });
    expect(result.bytes.equals(PNG_BYTES)).toBe(true);
    expect(result.contentType).toBe("image/png");
    expect(result.finalUrl).toBe(`${image.origin}/cat.png`);
  });

  it("lets a CIDR in allowedHosts through without the private allowance", async () => {
    const result = await fetchImageUrl(`${image.origin}/cat.png`, { ...base, allowedHosts: ["127.0.0.0/8"] });
    expect(result.bytes.equals(PNG_BYTES)).toBe(true);
  });

  it("follows relative redirects up to the limit", async () => {
    const hops = await startServer((req, res) => {
      const n = Number(req.url?.slice("/hop/".length));
      if (n < 2) res.writeHead(302, { location: `/hop/${n + 1}` }).end();
      else res.writeHead(200, { "content-type": "image/png" }).end(PNG_BYTES);
    });
    const result = await fetchImageUrl(`${hops.origin}/hop/0`, { ...base, maxRedirects: 2, allowPrivateAddresses: true });
    expect(result.finalUrl).toBe(`${hops.origin}/hop/2`);
    expect(result.bytes.equals(PNG_BYTES)).toBe(true);
  });

  it("answers 404 with CLIPGUARD_E_URL_STATUS (not retryable), without echoing the query", async () => {
    const err = await fetchError(`${image.origin}/missing.png?token=s3cr3t`, { ...base, allowPrivateAddresses: true });
    expect(err).toMatchObject({ code: "CLIPGUARD_E_URL_STATUS", retryable: false });
    expect(err.message).toContain("/missing.png");
    expect(err.message).not.toContain("s3cr3t");
  });

  it("answers 500 with CLIPGUARD_E_URL_FETCH (retryable)", async () => {
    const failing = await startServer((_req, res) => res.writeHead(500).end("boom"));
    const err = await fetchError(`${failing.origin}/x.png`, { ...base, allowPrivateAddresses: true });
    expect(err).toMatchObject({ code: "CLIPGUARD_E_URL_FETCH", retryable: true });
    expect(err.message).not.toContain("boom");
  });

  it("answers a closed port with CLIPGUARD_E_URL_FETCH (retryable)", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const err = await fetchError(`http://127.0.0.1:${port}/x.png`, { ...base, allowPrivateAddresses: true });
    expect(err).toMatchObject({ code: "CLIPGUARD_E_URL_FETCH", retryable: true });
  });
});

const big = await startServer((req, res) => {
  if (req.url === "/declared") {
    res.writeHead(200, { "content-type": "image/png", "content-length": 4096 });
    res.write(Buffer.alloc(16));
    // never finishes: the fetcher must refuse on the header alone
  } else if (req.url === "/streamed") {
    res.writeHead(200, { "content-type": "image/png" }); // chunked, no length
    const timer = setInterval(() => res.write(Buffer.alloc(256)), 5);
    res.on("close", () => clearInterval(timer));
  } else if (req.url === "/exact") {
    res.writeHead(200).end(Buffer.alloc(1024));
  } else if (req.url === "/silent") {
    // accepts the connection and the request, never answers
  } else if (req.url === "/trickle") {
    res.writeHead(200, { "content-type": "image/png" });
    const timer = setInterval(() => res.write(Buffer.alloc(1)), 50);
    res.on("close", () => clearInterval(timer));
  }
});
describe("fetchImageUrl: limits", () => {
  const opts = { ...base, allowPrivateAddresses: true };

  it("refuses a Content-Length over the limit before reading the body", async () => {
    const err = await fetchError(`${big.origin}/declared`, opts);
    expect(err.code).toBe("CLIPGUARD_E_IMAGE_TOO_LARGE");
  });

  it("aborts a body that streams past the limit", async () => {
    const err = await fetchError(`${big.origin}/streamed`, opts);
    expect(err.code).toBe("CLIPGUARD_E_IMAGE_TOO_LARGE");
  });

  it("accepts a body of exactly maxBytes", async () => {
    const result = await fetchImageUrl(`${big.origin}/exact`, opts);
    expect(result.bytes.length).toBe(1024);
  });

  it("gives up on a server that takes the connection and never answers (stalled: not retried)", async () => {
    const started = Date.now();
    const err = await fetchError(`${big.origin}/silent`, { ...opts, timeoutMs: 300 });
    expect(err).toMatchObject({ code: "CLIPGUARD_E_URL_STALLED", retryable: false });
    expect(Date.now() - started).toBeLessThan(300 + 2000);
  });

  it("gives up on a server that trickles forever (stalled)", async () => {
    const started = Date.now();
    const err = await fetchError(`${big.origin}/trickle`, { ...opts, timeoutMs: 400, maxBytes: 1_000_000 });
    expect(err.code).toBe("CLIPGUARD_E_URL_STALLED");
    expect(Date.now() - started).toBeLessThan(400 + 2000);
  });
});

describe("fetchImageUrl: refusals", () => {
  // Nothing may dial out for a refused URL: refusals of literals happen before any socket exists.
  let connectSpy: ReturnType<typeof vi.spyOn>;
  beforeEach(() => {
    connectSpy = vi.spyOn(Socket.prototype, "connect");
  });
  afterEach(() => {
    connectSpy.mockRestore();
  });

  it.each([
    "http://127.0.0.1/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://app.localhost/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://192.0.2.1/",
    "https://[::ffff:10.0.0.1]/",
  ])("refuses %s before connecting", async (url) => {
    const lookup = fakeLookup({});
    const err = await fetchError(url, { ...base, lookup });
    expect(err).toMatchObject({ code: "CLIPGUARD_E_URL_REFUSED", retryable: false });
    expect(lookup.calls).toEqual([]);
    expect(connectSpy).not.toHaveBeenCalled();
  });

  it.each([
    ["file:///etc/passwd"],
    ["ftp://127.0.0.1/x.png"],
    ["gopher://127.0.0.1:70/_x"],
    ["data:image/png;base64,iVBORw0KGgo="],
    ["not a url"],
  ])("refuses %s even with the private allowance", async (url) => {
    const err = await fetchError(url, { ...base, allowPrivateAddresses: true });
    expect(err.code).toBe("CLIPGUARD_E_URL_REFUSED");
    expect(connectSpy).not.toHaveBeenCalled();
  });

  it("refuses a URL with userinfo, without echoing the credentials", async () => {
    const err = await fetchError(`http://admin:hunter2@127.0.0.1:${image.port}/cat.png`, {
      ...base,
      allowPrivateAddresses: true,
    });
    expect(err.code).toBe("CLIPGUARD_E_URL_REFUSED");
    expect(err.message).not.toContain("hunter2");
    expect(err.message).not.toContain("admin");
    expect(connectSpy).not.toHaveBeenCalled();
  });

  it.each([
    ["evil.test", "127.0.0.1"],
    ["internal.test", "10.0.0.5"],
    ["mapped.test", "::ffff:127.0.0.1"],
    ["meta.test", "169.254.169.254"],
  ])("refuses %s, which resolves to %s, after DNS and before connecting", async (host, address) => {
    const lookup = fakeLookup({ [host]: address });
    const err = await fetchError(`http://${host}/cat.png`, { ...base, lookup });
    expect(err.code).toBe("CLIPGUARD_E_URL_REFUSED");
    expect(err.message).not.toContain(address);
    expect(lookup.calls).toEqual([host]);
    expect(connectSpy).not.toHaveBeenCalled();
  });

  it("never connects to a public-looking host that resolves to loopback", async () => {
    const canary = await startServer((_req, res) => res.writeHead(200).end(PNG_BYTES));
    const lookup = fakeLookup({ "images.example.com": "127.0.0.1" });
    const err = await fetchError(`http://images.example.com:${canary.port}/cat.png`, { ...base, lookup });
    expect(err.code).toBe("CLIPGUARD_E_URL_REFUSED");
    expect(canary.connections).toBe(0);
  });

  it("refuses a redirect from an allowed host into a refused address", async () => {
    const canary = await startServer((_req, res) => res.writeHead(200).end(PNG_BYTES));
    const redirector = await startServer((req, res) => {
      const targets: Record<string, string> = {
        "/to-metadata": "http://169.254.169.254/latest/meta-data/",
        "/to-evil": `http://evil.test:${canary.port}/cat.png`,
        "/to-loopback-literal": `http://127.0.0.1:${canary.port}/cat.png`,
      };
      res.writeHead(302, { location: targets[req.url ?? ""] ?? "/" }).end();
    });
    const lookup = fakeLookup({ "allowed.test": "127.0.0.1", "evil.test": "127.0.0.1" });
    const opts = { ...base, lookup, allowedHosts: ["allowed.test"] };
    for (const path of ["/to-metadata", "/to-evil", "/to-loopback-literal"]) {
      const err = await fetchError(`http://allowed.test:${redirector.port}${path}`, opts);
      expect(err.code).toBe("CLIPGUARD_E_URL_REFUSED");
    }
    expect(redirector.paths).toEqual(["/to-metadata", "/to-evil", "/to-loopback-literal"]);
    expect(canary.connections).toBe(0);
  });

  it("refuses a redirect to a non-http scheme", async () => {
    const redirector = await startServer((_req, res) => res.writeHead(301, { location: "file:///etc/passwd" }).end());
    const err = await fetchError(`${redirector.origin}/`, { ...base, allowPrivateAddresses: true });
    expect(err.code).toBe("CLIPGUARD_E_URL_REFUSED");
  });

  it("gives up on a redirect loop after maxRedirects", async () => {
    const loop = await startServer((_req, res) => res.writeHead(307, { location: "/again" }).end());
    const err = await fetchError(`${loop.origin}/start`, { ...base, maxRedirects: 3, allowPrivateAddresses: true });
    expect(err).toMatchObject({ code: "CLIPGUARD_E_URL_REDIRECTS", retryable: false });
    expect(loop.paths).toEqual(["/start", "/again", "/again", "/again"]);
  });
});

describe("request-filtering-agent's refusal", () => {
  it("is recognised by isFilteringAgentRefusal, and other network errors are not", async () => {
    const canary = await startServer((_req, res) => res.writeHead(200).end());
    const agent = new RequestFilteringHttpAgent();
    const refusal = await new Promise<unknown>((resolve) => {
      get({ host: "127.0.0.1", port: canary.port, agent }, (res) => resolve(res)).on("error", resolve);
    });
    expect(isFilteringAgentRefusal(refusal)).toBe(true);
    expect(canary.connections).toBe(0);

    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const refused = await new Promise<unknown>((resolve) => {
      get({ host: "127.0.0.1", port, agent: new RequestFilteringHttpAgent({ allowPrivateIPAddress: true }) }, resolve).on(
        "error",
        resolve,
      );
    });
    expect((refused as NodeJS.ErrnoException).code).toBe("ECONNREFUSED");
    expect(isFilteringAgentRefusal(refused)).toBe(false);
  });
});
