import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { ClipguardError } from "../shared/errors.js";

/**
 * A small client for the parts of the Hugging Face Hub HTTP API that `clipguard model pull` needs:
 * `GET /api/models/{repo}/revision/{rev}?blobs=true` (the commit and every file with its size,
 * git blob id and, for LFS files, sha256) and `GET /{repo}/resolve/{commit}/{path}` (the bytes; the
 * Hub redirects LFS files to a CDN and names their sha256 in `X-Linked-Etag`).
 */

/** `owner/name`, each part [A-Za-z0-9._-], not starting with `.` or `-`, no `..`. */
const REPO_PART = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,95}$/;

/** Splits and checks a repository id, so that it can only ever name a path on the Hub. */
export function parseRepoId(repo: string): { owner: string; name: string } {
  const parts = repo.split("/");
  const [owner, name] = parts;
  if (parts.length !== 2 || owner === undefined || name === undefined || !REPO_PART.test(owner) || !REPO_PART.test(name) || repo.includes("..")) {
    throw new ClipguardError("CLIPGUARD_E_CONFIG", `invalid repository "${repo}": expected owner/name, letters, digits, ".", "_" and "-" (e.g. Xenova/clip-vit-base-patch32)`);
  }
  return { owner, name };
}

/**
 * Checks a revision (branch, tag, `refs/pr/N` or commit sha) by git's ref rules, narrowed to
 * [A-Za-z0-9._/-]: no `..`, no empty, leading-dot or `.lock` components. It is only ever sent
 * URL-encoded, never used as a local path.
 */
export function checkRevision(revision: string): string {
  const components = revision.split("/");
  const ok =
    /^[A-Za-z0-9._/-]{1,255}$/.test(revision) &&
    !revision.includes("..") &&
    components.every((c) => c.length > 0 && !c.startsWith(".") && !c.endsWith(".lock"));
  if (!ok) {
    throw new ClipguardError("CLIPGUARD_E_CONFIG", `invalid revision "${revision}": expected a branch, tag, refs/pr/N or commit sha (letters, digits, ".", "_", "-", "/"; no "..")`);
  }
  return revision;
}

/** One file of a Hub repository, as the model info API lists it. */
export interface HubFile {
  path: string;
  size?: number;
  /** sha256 of the content, for LFS files. */
  sha256?: string;
  /** git blob id (sha1 of `blob <size>\0<content>`), for files stored in git. */
  gitBlobId?: string;
}

export interface HubRepoInfo {
  /** The commit the revision resolved to; files are downloaded from it, so they all match. */
  commit: string;
  files: Map<string, HubFile>;
}

const hex = (n: number) => z.string().regex(new RegExp(`^[0-9a-f]{${n}}$`));
const modelInfoSchema = z.object({
  sha: hex(40),
  siblings: z.array(
    z.object({
      rfilename: z.string(),
      size: z.number().int().nonnegative().optional(),
      blobId: hex(40).optional(),
      lfs: z.object({ sha256: hex(64).optional(), oid: hex(64).optional(), size: z.number().int().nonnegative().optional() }).optional(),
    }),
  ),
});

const MAX_ATTEMPTS = 25;

/** A failed request worth repeating: network fault, stall, 408, 429, 5xx. */
function transient(message: string, cause?: unknown): ClipguardError {
  return new ClipguardError("CLIPGUARD_E_DOWNLOAD_NETWORK", message, { cause });
}

/** Origin and path of a URL, without a query string (CDN URLs carry signatures nobody needs to see). */
export function displayUrl(url: string): string {
  const u = new URL(url);
  return `${u.origin}${u.pathname}`;
}

export interface HubClientOptions {
  /** Base URL of the Hub. @default "https://huggingface.co" */
  endpoint: string;
  /** Sent as `Authorization: Bearer` to the endpoint's origin only (not to the CDN it redirects to). */
  token?: string | undefined;
  /** Pauses between attempts of a request that failed transiently. @default [500, 2000, 5000] */
  retryDelaysMs?: readonly number[];
  /** A request fails (transiently) when no byte arrives for this long. @default 30000 */
  stallTimeoutMs?: number;
  /** Redirects followed per request. @default 5 */
  maxRedirects?: number;
}

/** A response with a body, after redirects, plus the Hub headers seen on the way. */
export interface HubResponse {
  response: Response;
  url: string;
  /** `X-Linked-Etag` (sha256 of an LFS file), unquoted. */
  linkedEtag?: string;
  signal: AbortSignal;
  /** Call on every chunk received, so a slow but moving download does not time out. */
  alive(): void;
  /** Stops the stall timer; call when done with the body. */
  done(): void;
}

export class HubClient {
  readonly endpoint: string;
  private readonly origin: string;
  private readonly token: string | undefined;
  private readonly retryDelaysMs: readonly number[];
  private readonly stallTimeoutMs: number;
  private readonly maxRedirects: number;

  constructor(options: HubClientOptions) {
    this.endpoint = options.endpoint.replace(/\/+$/, "");
    this.origin = new URL(this.endpoint).origin;
    this.token = options.token;
    this.retryDelaysMs = options.retryDelaysMs ?? [500, 2000, 5000];
    this.stallTimeoutMs = options.stallTimeoutMs ?? 30_000;
    this.maxRedirects = options.maxRedirects ?? 5;
  }

  fileUrl(repo: string, commit: string, file: string): string {
    const { owner, name } = parseRepoId(repo);
    return `${this.endpoint}/${owner}/${name}/resolve/${commit}/${file.split("/").map(encodeURIComponent).join("/")}`;
  }

  /**
   * Runs `attempt` until it succeeds, retrying transient failures after the configured pauses. An
   * attempt that calls `progress()` before failing (bytes arrived) does not use up a retry.
   */
  async retrying<T>(attempt: (progress: () => void) => Promise<T>): Promise<T> {
    let failures = 0;
    // a server that keeps cutting connections still sends something each time; do not loop forever
    for (let attempts = 1; ; attempts++) {
      let progressed = false;
      try {
        return await attempt(() => {
          progressed = true;
        });
      } catch (err) {
        if (!(err instanceof ClipguardError && err.code === "CLIPGUARD_E_DOWNLOAD_NETWORK")) throw err;
        failures = progressed ? 0 : failures + 1;
        const delay = this.retryDelaysMs[Math.max(0, failures - 1)];
        if (delay === undefined || attempts >= MAX_ATTEMPTS) {
          throw new ClipguardError(err.code, `${err.message} (gave up after ${attempts} attempts; run again to resume)`, { cause: err.cause });
        }
        await sleep(delay);
      }
    }
  }

  /**
   * One GET, following redirects; resolves with the first non-redirect response whatever its
   * status. Network faults and stalls throw CLIPGUARD_E_DOWNLOAD_NETWORK.
   */
  async get(url: string, headers: Record<string, string> = {}): Promise<HubResponse> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(transient(`no data from ${displayUrl(url)} for ${this.stallTimeoutMs} ms`)), this.stallTimeoutMs);
    let linkedEtag: string | undefined;
    let current = url;
    try {
      for (let redirects = 0; ; redirects++) {
        const target = new URL(current);
        if (target.protocol !== "https:" && target.protocol !== "http:") {
          throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_RESPONSE", `${displayUrl(url)} redirected to a ${target.protocol} URL`);
        }
        const sent: Record<string, string> = { ...headers, "user-agent": "clipguard" };
        if (this.token !== undefined && target.origin === this.origin) sent["authorization"] = `Bearer ${this.token}`;
        let response: Response;
        try {
          response = await fetch(current, { headers: sent, redirect: "manual", signal: controller.signal });
        } catch (err) {
          throw networkError(err, controller.signal, current);
        }
        linkedEtag ??= unquoteEtag(response.headers.get("x-linked-etag"));
        const location = response.headers.get("location");
        if (![301, 302, 303, 307, 308].includes(response.status) || location === null) {
          return {
            response,
            url: current,
            ...(linkedEtag !== undefined ? { linkedEtag } : {}),
            signal: controller.signal,
            alive: () => timer.refresh(),
            done: () => clearTimeout(timer),
          };
        }
        await response.body?.cancel();
        if (redirects >= this.maxRedirects) {
          throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_RESPONSE", `${displayUrl(url)} redirected more than ${this.maxRedirects} times`);
        }
        current = new URL(location, current).href;
      }
    } catch (err) {
      clearTimeout(timer);
      throw err;
    }
  }

  /** The commit a revision resolves to and the repository's files with their checksums. */
  async repoInfo(repo: string, revision: string): Promise<HubRepoInfo> {
    const { owner, name } = parseRepoId(repo);
    const url = `${this.endpoint}/api/models/${owner}/${name}/revision/${encodeURIComponent(checkRevision(revision))}?blobs=true`;
    const body = await this.retrying(async () => {
      const res = await this.get(url, { accept: "application/json" });
      try {
        if (res.response.status !== 200) {
          await res.response.body?.cancel();
          const hubError = res.response.headers.get("x-error-code");
          if ([401, 403, 404].includes(res.response.status)) {
            const what = hubError === "RevisionNotFound" ? `revision "${revision}" of ${repo}` : `repository ${repo}`;
            throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_NOT_FOUND", `${what} not found on ${this.endpoint} (HTTP ${res.response.status}); if it is private or gated, set HF_TOKEN to a token with access`);
          }
          throw statusError(res.response.status, url);
        }
        return await res.response.json().catch((err: unknown) => {
          throw res.signal.aborted ? networkError(err, res.signal, url) : new ClipguardError("CLIPGUARD_E_DOWNLOAD_RESPONSE", `${displayUrl(url)} did not answer with JSON`, { cause: err });
        });
      } finally {
        res.done();
      }
    });
    const parsed = modelInfoSchema.safeParse(body);
    if (!parsed.success) {
      throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_RESPONSE", `${displayUrl(url)}: unexpected model info (${parsed.error.issues[0]?.path.join(".") ?? "?"}: ${parsed.error.issues[0]?.message ?? "?"})`);
    }
    const files = new Map<string, HubFile>();
    for (const s of parsed.data.siblings) {
      const sha256 = s.lfs?.sha256 ?? s.lfs?.oid;
      const size = s.lfs?.size ?? s.size;
      files.set(s.rfilename, {
        path: s.rfilename,
        ...(size !== undefined ? { size } : {}),
        ...(sha256 !== undefined ? { sha256 } : {}),
        ...(s.lfs === undefined && s.blobId !== undefined ? { gitBlobId: s.blobId } : {}),
      });
    }
    return { commit: parsed.data.sha, files };
  }
}

/** The error for a status that is neither success nor redirect. */
export function statusError(status: number, url: string): ClipguardError {
  if (status === 408 || status === 429 || status >= 500) return transient(`${displayUrl(url)} answered HTTP ${status}`);
  return new ClipguardError("CLIPGUARD_E_DOWNLOAD_RESPONSE", `${displayUrl(url)} answered HTTP ${status}`);
}

/** Maps a fetch or body-read failure to a transient error naming the cause (ECONNREFUSED, stall, cut). */
export function networkError(err: unknown, signal: AbortSignal, url: string): ClipguardError {
  if (signal.aborted && signal.reason instanceof ClipguardError) return signal.reason;
  if (err instanceof ClipguardError) return err;
  const cause = err instanceof Error ? (err.cause as { code?: unknown; message?: unknown } | undefined) : undefined;
  const detail = typeof cause?.code === "string" ? cause.code : typeof cause?.message === "string" ? cause.message : err instanceof Error ? err.message : String(err);
  return transient(`cannot download ${displayUrl(url)}: ${detail}`, err);
}

function unquoteEtag(value: string | null): string | undefined {
  if (value === null) return undefined;
  return value.replace(/^W\//, "").replaceAll('"', "").toLowerCase();
}
