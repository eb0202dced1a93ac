/**
 * Network pieces of the hostile-input and SSRF scenarios: loopback HTTP servers that count every
 * connection they accept (canaries), servers that misbehave on purpose, and a preload module for
 * the worker process that injects a DNS resolver (a table; no real DNS query ever leaves) and
 * logs every outgoing TCP dial, so a form that slipped through is seen even when nothing listens
 * at its address.
 */
import { readFile, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";

export interface TestServer {
  host: string;
  port: number;
  /** `http://host:port` (IPv6 hosts bracketed). */
  origin: string;
  /** TCP connections accepted so far. */
  connections: number;
  /** Request paths seen so far. */
  paths: string[];
  close(): Promise<void>;
}

/** An HTTP server on `host` (a loopback address), counting connections. */
export async function startServer(host: string, handler: http.RequestListener = (_req, res) => res.writeHead(200).end("canary")): Promise<TestServer> {
  const server = http.createServer(handler);
  const state: TestServer = {
    host,
    port: 0,
    origin: "",
    connections: 0,
    paths: [],
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  server.on("connection", () => state.connections++);
  server.on("request", (req: http.IncomingMessage) => state.paths.push(req.url ?? ""));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, resolve);
  });
  state.port = (server.address() as AddressInfo).port;
  state.origin = `http://${host.includes(":") ? `[${host}]` : host}:${state.port}`;
  return state;
}

/**
 * A server that misbehaves by path: `/silent` accepts and never answers; `/stream` sends a PNG
 * signature and then bytes forever as fast as the socket takes them; `/trickle` sends one byte
 * every 100 ms forever; `/hop/N` redirects to `/hop/N+1`; `/file/NAME` serves `files[NAME]` with
 * the Content-Type given there.
 */
export async function startHostileServer(host: string, files: Record<string, { bytes: Buffer; type: string }>): Promise<TestServer> {
  const chunk = Buffer.alloc(64 * 1024, 0x41);
  return startServer(host, (req, res) => {
    const url = req.url ?? "/";
    if (url.startsWith("/silent")) return; // never answers; closeAllConnections ends it
    if (url.startsWith("/stream")) {
      res.writeHead(200, { "content-type": "image/png" });
      res.write(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
      const pump = (): void => {
        while (!res.destroyed && res.write(chunk)) {
          /* fill the socket buffer */
        }
        if (!res.destroyed) res.once("drain", pump);
      };
      pump();
      return;
    }
    if (url.startsWith("/trickle")) {
      res.writeHead(200, { "content-type": "image/png" });
      const timer = setInterval(() => res.write(Buffer.from([0x89])), 100);
      res.on("close", () => clearInterval(timer));
      return;
    }
    const hop = /^\/hop\/(\d+)/.exec(url);
    if (hop !== null) {
      res.writeHead(302, { location: `/hop/${Number(hop[1]) + 1}` }).end();
      return;
    }
    const file = files[url.replace(/^\/file\//, "")];
    if (url.startsWith("/file/") && file !== undefined) {
      res.writeHead(200, { "content-type": file.type, "content-length": file.bytes.length }).end(file.bytes);
      return;
    }
    res.writeHead(404).end();
  });
}

/** What the injected resolver answers. */
export interface ResolverTable {
  /** Name → every address (answered all at once, as getaddrinfo does). */
  answers: Record<string, string[]>;
  /** Name → addresses answered one per lookup, in turn (DNS rebinding). */
  rotating?: Record<string, string[]>;
}

/** One outgoing TCP dial the worker made: the host it dialled (an IP after lookup) and the port. */
export interface Dial {
  host: string;
  port: number;
}

const PRELOAD = String.raw`
import dns from "node:dns";
import fs from "node:fs";
import net from "node:net";
import { syncBuiltinESMExports } from "node:module";

const table = JSON.parse(process.env.CHAOS_RESOLVER_TABLE ?? "{}");
const dialLog = process.env.CHAOS_DIAL_LOG;
const turns = new Map();
const family = (address) => net.isIP(address);

// the injected resolver: a table, nothing else (no query leaves the machine)
dns.lookup = function lookup(hostname, options, callback) {
  if (typeof options === "function") { callback = options; options = {}; }
  if (typeof options === "number") options = { family: options };
  const name = String(hostname).toLowerCase().replace(/\.$/, "");
  let addresses = table.answers?.[name];
  const rotating = table.rotating?.[name];
  if (rotating !== undefined) {
    const turn = turns.get(name) ?? 0;
    turns.set(name, turn + 1);
    addresses = [rotating[turn % rotating.length]];
  }
  if (net.isIP(name) !== 0) addresses = [name];
  process.nextTick(() => {
    if (addresses === undefined) {
      const err = Object.assign(new Error("getaddrinfo ENOTFOUND " + hostname), { code: "ENOTFOUND", hostname });
      callback(err, undefined, undefined);
    } else if (options?.all) {
      callback(null, addresses.map((address) => ({ address, family: family(address) })));
    } else {
      callback(null, addresses[0], family(addresses[0]));
    }
  });
};
syncBuiltinESMExports();

// the dial tripwire: every outgoing TCP connection, by the address actually dialled
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  // net.createConnection passes its normalized arguments as one array: [options, callback]
  const first = Array.isArray(args[0]) ? args[0][0] : args[0];
  const options = typeof first === "object" && first !== null ? first : { port: args[0], host: args[1] };
  if (dialLog !== undefined && options.port !== undefined && options.port !== null) {
    const record = (host) => fs.appendFileSync(dialLog, JSON.stringify({ host, port: Number(options.port) }) + "\n");
    if (net.isIP(String(options.host ?? "")) !== 0) record(options.host);
    else this.once("lookup", (err, address) => record(err ? "lookup-failed:" + options.host : address));
  }
  return connect.apply(this, args);
};
`;

/**
 * Writes the preload into `dir` and returns the environment that makes a worker process load it:
 * `NODE_OPTIONS=--import …`, the resolver table and the dial log's path.
 */
export async function resolverPreloadEnv(dir: string, table: ResolverTable): Promise<{ env: Record<string, string>; dialLog: string }> {
  const file = path.join(dir, "chaos-net-preload.mjs");
  const dialLog = path.join(dir, "dials.jsonl");
  await writeFile(file, PRELOAD);
  await writeFile(dialLog, "");
  return {
    dialLog,
    env: { NODE_OPTIONS: `--import ${pathToFileURL(file).href}`, CHAOS_RESOLVER_TABLE: JSON.stringify(table), CHAOS_DIAL_LOG: dialLog },
  };
}

/** Every dial the worker logged so far. */
export async function readDials(dialLog: string): Promise<Dial[]> {
  const text = await readFile(dialLog, "utf8");
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as Dial);
}
