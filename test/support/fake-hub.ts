import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

/**
 * A local stand-in for the Hugging Face Hub, in its URL scheme:
 * - `GET /api/models/{owner}/{name}/revision/{rev}?blobs=true`: `{id, sha, siblings: [{rfilename,
 *   size, blobId, lfs?: {sha256, size, pointerSize}}]}`; 401 (anonymous) or 404 with
 *   `X-Error-Code: RepoNotFound` for an unknown repository, 404 `RevisionNotFound` for an unknown revision;
 * - `GET /{owner}/{name}/resolve/{rev}/{path}`: files stored in git are served directly (ETag = git
 *   blob id); LFS files (`*.onnx`) redirect to a second server, the "CDN" (another origin, as on the
 *   real Hub), with `X-Linked-Etag: "<sha256>"`, `X-Linked-Size` and `X-Repo-Commit`;
 * - both honour `Range: bytes=N-` (206, or 416 past the end).
 * With `token` set, every Hub request (not the CDN's: its URLs are "signed") needs `Authorization: Bearer <token>`.
 * Fault knobs: `corrupt` (serve other bytes than published), `cut` (drop the connection at a file
 * offset), `ignoreRange` (answer 200 to range requests), `extraRedirects` (hops before the CDN).
 */

export interface FakeRepo {
  files: Record<string, Buffer>;
  commit?: string;
}

export interface SeenRequest {
  server: "hub" | "cdn";
  method: string;
  path: string;
  /** The repository file the request was for (resolve and CDN requests). */
  file?: string;
  range?: string;
  authorization?: string;
}

export interface FakeHub {
  url: string;
  cdnUrl: string;
  requests: SeenRequest[];
  repos: Map<string, FakeRepo>;
  token: string | undefined;
  /** Files (repository paths) whose bytes are served with one byte flipped. */
  corrupt: Set<string>;
  /** Files whose responses are cut once the file offset `at` is reached, `times` times (Infinity: always). */
  cut: Map<string, { at: number; times: number }>;
  ignoreRange: boolean;
  extraRedirects: number;
  close(): Promise<void>;
}

const sha = (algo: "sha1" | "sha256", ...parts: (string | Buffer)[]) => {
  const h = createHash(algo);
  for (const p of parts) h.update(p);
  return h.digest("hex");
};
export const sha256 = (data: Buffer) => sha("sha256", data);
const gitBlobId = (data: Buffer) => sha("sha1", `blob ${data.length}\0`, data);
const isLfs = (file: string) => file.endsWith(".onnx");

const DEMO = path.resolve("models/demo");
const JSON_FILES = ["config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

/**
 * Appends an unknown protobuf field (number 1000, length-delimited) to an ONNX model: parsers skip
 * it, so the model still loads, but the file is as large as a test of partial downloads needs.
 */
export function padOnnx(model: Buffer, padding: number): Buffer {
  const varint = (n: number) => {
    const out: number[] = [];
    while (n > 127) {
      out.push((n & 127) | 128);
      n = Math.floor(n / 128);
    }
    out.push(n);
    return Buffer.from(out);
  };
  return Buffer.concat([model, varint((1000 << 3) | 2), varint(padding), Buffer.alloc(padding, 0x5a)]);
}

/**
 * A repository holding the bundled demo model (as the real Xenova exports: JSON files, a README,
 * onnx/*.onnx), plus copies of the ONNX files under each extra variant's name.
 */
export function demoRepo(options: { variants?: string[]; padVision?: number } = {}): FakeRepo {
  const files: Record<string, Buffer> = { "README.md": Buffer.from("# demo\n"), ".gitattributes": Buffer.from("*.onnx filter=lfs\n") };
  for (const f of JSON_FILES) files[f] = readFileSync(path.join(DEMO, f));
  const text = readFileSync(path.join(DEMO, "onnx", "text_model.onnx"));
  const vision0 = readFileSync(path.join(DEMO, "onnx", "vision_model.onnx"));
  const vision = options.padVision !== undefined ? padOnnx(vision0, options.padVision) : vision0;
  files["onnx/text_model.onnx"] = text;
  files["onnx/vision_model.onnx"] = vision;
  for (const v of options.variants ?? []) {
    files[`onnx/text_model_${v}.onnx`] = text;
    files[`onnx/vision_model_${v}.onnx`] = vision;
  }
  return { files };
}

function commitOf(repo: FakeRepo): string {
  return repo.commit ?? sha("sha1", ...Object.entries(repo.files).flatMap(([k, v]) => [k, v]));
}

function modelInfo(id: string, repo: FakeRepo): unknown {
  return {
    id,
    modelId: id,
    sha: commitOf(repo),
    private: false,
    siblings: Object.entries(repo.files).map(([rfilename, data]) => {
      if (!isLfs(rfilename)) return { rfilename, size: data.length, blobId: gitBlobId(data) };
      const pointer = Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(data)}\nsize ${data.length}\n`);
      return { rfilename, size: data.length, blobId: gitBlobId(pointer), lfs: { sha256: sha256(data), size: data.length, pointerSize: pointer.length } };
    }),
  };
}

/** Serves `data` (or the part a `Range: bytes=N-` asks for), applying the hub's fault knobs for `file`. */
function serveBytes(hub: FakeHub, req: http.IncomingMessage, res: http.ServerResponse, file: string, original: Buffer, headers: Record<string, string>): void {
  let data = original;
  if (hub.corrupt.has(file)) {
    data = Buffer.from(original);
    data[data.length - 1] = (data[data.length - 1] ?? 0) ^ 0xff;
  }
  let start = 0;
  const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
  if (range?.[1] !== undefined && !hub.ignoreRange) {
    start = Number(range[1]);
    if (start >= data.length) {
      res.writeHead(416, { "content-range": `bytes */${data.length}` }).end();
      return;
    }
    res.writeHead(206, { ...headers, "accept-ranges": "bytes", "content-length": String(data.length - start), "content-range": `bytes ${start}-${data.length - 1}/${data.length}` });
  } else {
    res.writeHead(200, { ...headers, "accept-ranges": "bytes", "content-length": String(data.length) });
  }
  const cut = hub.cut.get(file);
  if (cut !== undefined && cut.times > 0) {
    cut.times--;
    res.flushHeaders();
    const slice = data.subarray(start, Math.max(start, cut.at));
    // the bytes before the cut reach the client, then the connection drops mid-body (a client
    // may still lose some of them: fetch drops body chunks it had queued when the stream errors)
    res.write(slice, () => setTimeout(() => res.socket?.destroy(), 50));
    return;
  }
  res.end(data.subarray(start));
}

function route(hub: FakeHub, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? "/", hub.url);
  const seen: SeenRequest = { server: "hub", method: req.method ?? "GET", path: url.pathname + url.search };
  if (req.headers.range !== undefined) seen.range = req.headers.range;
  if (req.headers.authorization !== undefined) seen.authorization = req.headers.authorization;
  hub.requests.push(seen);

  const hop = /^\/hop\/(\d+)$/.exec(url.pathname);
  if (hop?.[1] !== undefined) {
    const left = Number(hop[1]);
    const next = left > 1 ? `/hop/${left - 1}?${url.searchParams}` : `${hub.cdnUrl}/cdn/${url.searchParams.get("sha")}?file=${url.searchParams.get("file")}`;
    res.writeHead(302, { location: next }).end();
    return;
  }
  if (hub.token !== undefined && req.headers.authorization !== `Bearer ${hub.token}`) {
    res.writeHead(401, { "x-error-code": "RepoNotFound", "content-type": "application/json" }).end('{"error":"Repository not found"}');
    return;
  }
  const info = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
  const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
  const id = info?.[1] ?? resolve?.[1];
  const repo = id !== undefined ? hub.repos.get(id) : undefined;
  if (id === undefined || repo === undefined) {
    const status = req.headers.authorization === undefined ? 401 : 404;
    res.writeHead(status, { "x-error-code": "RepoNotFound", "content-type": "application/json" }).end('{"error":"Repository not found"}');
    return;
  }
  const revision = decodeURIComponent(info?.[2] ?? resolve?.[2] ?? "");
  if (revision !== "main" && revision !== commitOf(repo)) {
    res.writeHead(404, { "x-error-code": "RevisionNotFound", "content-type": "application/json" }).end('{"error":"Invalid rev id"}');
    return;
  }
  if (info !== null) {
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(modelInfo(id, repo)));
    return;
  }
  const file = decodeURIComponent(resolve?.[3] ?? "");
  seen.file = file;
  const data = repo.files[file];
  if (data === undefined) {
    res.writeHead(404, { "x-error-code": "EntryNotFound" }).end();
    return;
  }
  const common = { "x-repo-commit": commitOf(repo) };
  if (!isLfs(file)) {
    serveBytes(hub, req, res, file, data, { ...common, etag: `"${gitBlobId(data)}"` });
    return;
  }
  const location =
    hub.extraRedirects > 0
      ? `/hop/${hub.extraRedirects}?sha=${sha256(data)}&file=${encodeURIComponent(file)}`
      : `${hub.cdnUrl}/cdn/${sha256(data)}?file=${encodeURIComponent(file)}&signature=s3cr3t`;
  res.writeHead(302, { ...common, location, "x-linked-etag": `"${sha256(data)}"`, "x-linked-size": String(data.length) }).end();
}

function routeCdn(hub: FakeHub, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? "/", hub.cdnUrl);
  const file = url.searchParams.get("file") ?? "";
  const seen: SeenRequest = { server: "cdn", method: req.method ?? "GET", path: url.pathname, file };
  if (req.headers.range !== undefined) seen.range = req.headers.range;
  if (req.headers.authorization !== undefined) seen.authorization = req.headers.authorization;
  hub.requests.push(seen);
  const key = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname)?.[1];
  for (const repo of hub.repos.values()) {
    const data = repo.files[file];
    if (data !== undefined && sha256(data) === key) {
      serveBytes(hub, req, res, file, data, { etag: `"${key}"` });
      return;
    }
  }
  res.writeHead(404).end();
}

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

export async function startFakeHub(repos: Record<string, FakeRepo>, options: { token?: string } = {}): Promise<FakeHub> {
  const main = http.createServer((req, res) => route(hub, req, res));
  const cdn = http.createServer((req, res) => routeCdn(hub, req, res));
  const hub: FakeHub = {
    url: "",
    cdnUrl: "",
    requests: [],
    repos: new Map(Object.entries(repos)),
    token: options.token,
    corrupt: new Set(),
    cut: new Map(),
    ignoreRange: false,
    extraRedirects: 0,
    async close() {
      for (const s of [main, cdn]) {
        s.closeAllConnections();
        await new Promise<void>((resolve) => s.close(() => resolve()));
      }
    },
  };
  hub.url = await listen(main);
  hub.cdnUrl = await listen(cdn);
  return hub;
}

/** A port nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  const { port } = new URL(await listen(server));
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return Number(port);
}
