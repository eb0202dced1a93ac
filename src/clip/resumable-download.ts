import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rename, rm, stat } from "node:fs/promises";
import { ClipguardError } from "../shared/errors.js";
import { displayUrl, networkError, statusError, type HubClient, type HubFile } from "./hub-client.js";

/** What a download tells the person waiting for it. */
export interface DownloadReporter {
  /** A request for `file` started; `from` > 0 when it resumes a partial file. */
  start(file: string, size: number | undefined, from: number): void;
  /** `received` bytes of `file` are on disk. */
  progress(file: string, received: number): void;
  /** `file` is complete and verified; `cached` when an earlier run had already finished it. */
  done(file: string, how: "downloaded" | "cached"): void;
}

interface Expected {
  kind: "sha256" | "git blob id";
  value: string;
}

/** The checksum the Hub publishes: sha256 for LFS files (info API, else `X-Linked-Etag`), the git blob id for the rest. */
function expectedChecksum(file: HubFile, linkedEtag: string | undefined): Expected | undefined {
  if (file.sha256 !== undefined) return { kind: "sha256", value: file.sha256 };
  if (linkedEtag !== undefined && /^[0-9a-f]{64}$/.test(linkedEtag)) return { kind: "sha256", value: linkedEtag };
  if (file.gitBlobId !== undefined) return { kind: "git blob id", value: file.gitBlobId };
  return undefined;
}

async function sizeOf(file: string): Promise<number | undefined> {
  return (await stat(file).catch(() => undefined))?.size;
}

/** The actual checksum of `file`, of the kind `expected` names. */
async function checksumOf(file: string, expected: Expected): Promise<string> {
  const hash = createHash(expected.kind === "sha256" ? "sha256" : "sha1");
  // git hashes `blob <size>\0` + content
  if (expected.kind === "git blob id") hash.update(`blob ${(await stat(file)).size}\0`);
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

function contentRangeStart(header: string | null): number | undefined {
  const match = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(header ?? "");
  return match?.[1] !== undefined ? Number(match[1]) : undefined;
}

/**
 * Brings `part` up to the whole file: continues from its size with `Range: bytes=N-` (206: append;
 * 200: the server sent everything, start over; 416: the partial is no prefix of the file, start
 * over), retrying transient faults. Returns the `X-Linked-Etag` seen.
 */
async function fetchToPart(client: HubClient, url: string, file: HubFile, part: string, reporter: DownloadReporter): Promise<string | undefined> {
  let linkedEtag: string | undefined;
  await client.retrying(async (progress) => {
    let offset = (await sizeOf(part)) ?? 0;
    if (file.size !== undefined && offset > file.size) {
      await rm(part, { force: true });
      offset = 0;
    }
    if (file.size !== undefined && offset === file.size && offset > 0) return;
    const res = await client.get(url, offset > 0 ? { range: `bytes=${offset}-` } : {});
    try {
      linkedEtag ??= res.linkedEtag;
      const { status } = res.response;
      if (status === 416 && offset > 0) {
        await res.response.body?.cancel();
        await rm(part, { force: true });
        progress(); // starting over is not a failed attempt
        throw networkError(new Error("the partial download is not a prefix of the file; starting over"), res.signal, url);
      }
      if (status !== 200 && status !== 206) {
        await res.response.body?.cancel();
        if (status === 404) throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_FILE_MISSING", `${file.path} is listed by the Hub but ${displayUrl(url)} answered HTTP 404`);
        if (status === 401 || status === 403) {
          throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_NOT_FOUND", `${displayUrl(url)} answered HTTP ${status}; if the repository is gated, accept its terms and set HF_TOKEN`);
        }
        throw statusError(status, url);
      }
      if (status === 206 && contentRangeStart(res.response.headers.get("content-range")) !== offset) {
        await res.response.body?.cancel();
        throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_RESPONSE", `${displayUrl(url)} answered a request for bytes ${offset}- with another range`);
      }
      if (status === 200) offset = 0;
      reporter.start(file.path, file.size, offset);
      let received = offset;
      const fh = await open(part, status === 206 ? "a" : "w");
      try {
        for await (const chunk of res.response.body ?? []) {
          res.alive();
          await fh.write(chunk);
          received += chunk.byteLength;
          progress();
          if (file.size !== undefined && received > file.size) {
            await fh.close();
            await rm(part, { force: true });
            throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_CHECKSUM", `${file.path}: received more than the ${file.size} bytes the Hub lists; deleted the partial download, run again to retry`);
          }
          reporter.progress(file.path, received);
        }
      } catch (err) {
        throw networkError(err, res.signal, url);
      } finally {
        await fh.close().catch(() => undefined);
      }
      if (file.size !== undefined && received < file.size) {
        throw networkError(new Error(`connection closed after ${received} of ${file.size} bytes`), res.signal, url);
      }
    } finally {
      res.done();
    }
  });
  return linkedEtag;
}

/**
 * Downloads one file of a Hub repository to `dest`, through `dest.part` so that an interrupted
 * download resumes, and verifies it against the checksum the Hub publishes. A `dest` left complete
 * by an earlier run is kept when it verifies.
 * @throws CLIPGUARD_E_DOWNLOAD_CHECKSUM (the partial file is deleted), _NETWORK, _RESPONSE, _FILE_MISSING
 */
export async function downloadVerified(client: HubClient, url: string, file: HubFile, dest: string, reporter: DownloadReporter): Promise<void> {
  const cachedExpectation = expectedChecksum(file, undefined);
  if ((await sizeOf(dest)) !== undefined) {
    if (cachedExpectation !== undefined && (await checksumOf(dest, cachedExpectation)) === cachedExpectation.value) {
      reporter.done(file.path, "cached");
      return;
    }
    await rm(dest, { force: true });
  }
  const part = `${dest}.part`;
  // a partial file from an earlier run may belong to an older commit of the file; if the result
  // does not verify, start over once before giving up
  let mayStartOver = ((await sizeOf(part)) ?? 0) > 0;
  for (;;) {
    const linkedEtag = await fetchToPart(client, url, file, part, reporter);
    const expected = expectedChecksum(file, linkedEtag);
    if (expected === undefined) {
      throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_RESPONSE", `the Hub publishes no checksum for ${file.path} (no lfs.sha256, X-Linked-Etag or blobId); refusing an unverifiable file`);
    }
    const actual = await checksumOf(part, expected);
    if (actual === expected.value) {
      await rename(part, dest);
      reporter.done(file.path, "downloaded");
      return;
    }
    await rm(part, { force: true });
    if (!mayStartOver) {
      throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_CHECKSUM", `${file.path}: ${expected.kind} ${actual} does not match ${expected.value} published by the Hub; deleted the partial download, run again to retry`);
    }
    mayStartOver = false;
  }
}
