import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { formatBytes } from "../src/cli/download-progress.js";
import { checkRevision, parseRepoId } from "../src/clip/hub-client.js";
import { pullModel, type DownloadReporter, type PullOptions } from "../src/clip/model-download.js";
import { openModelDirectory } from "../src/clip/model-dir.js";
import { ClipguardError, type ErrorCode } from "../src/shared/errors.js";
import { tempDir } from "./support/fixtures.js";
import { closedPort, demoRepo, sha256, startFakeHub, type FakeHub } from "./support/fake-hub.js";
import { CLI } from "./support/worker-process.js";

const REPO = "Xenova/clip-vit-base-patch32";
const BIG = "clipguard/big-clip"; // vision model padded to > 2 MB, for partial downloads
const PAD = 2 * 1024 * 1024;
const CUT = 1024 * 1024;
const LAYOUT = ["config.json", "onnx/text_model.onnx", "onnx/vision_model.onnx", "preprocessor_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"];
const IMAGE = path.resolve("examples/images/red-poster.png");
const TOKEN = "hf_TestTokenThatMustNeverBePrinted";

/** Runs the built CLI without blocking this process's event loop (the fake hub lives here). */
function clipguard(args: string[], env: Record<string, string>, cwd?: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd,
      env: { ...process.env, CLIPGUARD_MODEL_DIR: "", CLIPGUARD_POLICIES: "", HF_TOKEN: "", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) out.push(...(await listFiles(path.join(dir, entry.name), rel)));
    else out.push(rel);
  }
  return out.sort();
}

async function pullError(options: PullOptions): Promise<ClipguardError> {
  const err = await pullModel(options).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ClipguardError);
  return err as ClipguardError;
}

function expectFailure(result: { status: number | null; stderr: string }, code: ErrorCode, ...fragments: string[]): void {
  expect(result.status).toBe(2);
  const lines = result.stderr.split("\n").filter((l) => l.startsWith("clipguard:"));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain(`[${code}]`);
  for (const f of fragments) expect(lines[0]).toContain(f);
  expect(result.stderr).not.toMatch(/\n\s+at /); // no stack trace
}

/** A reporter that records what a person would see. */
function recorder(): DownloadReporter & { events: string[] } {
  const events: string[] = [];
  return { events, start: (f, _s, from) => events.push(`start ${f} ${from}`), progress() {}, done: (f, how) => events.push(`${how} ${f}`) };
}

describe("clipguard model pull", () => {
  let hub: FakeHub;
  let root: string;
  let cases = 0;
  const fresh = async () => path.join(root, `case-${++cases}`, "model");

  beforeAll(async () => {
    hub = await startFakeHub({
      [REPO]: demoRepo({ variants: ["quantized"] }),
      [BIG]: demoRepo({ padVision: PAD }),
    });
    root = await tempDir("clipguard-pull-");
  });
  afterAll(async () => hub.close());
  afterEach(() => {
    hub.requests.length = 0;
    hub.token = undefined;
    hub.corrupt.clear();
    hub.cut.clear();
    hub.ignoreRange = false;
    hub.extraRedirects = 0;
  });

  it("pulls the layout's files into models/<name>, and `clipguard score --model DIR` uses them", async () => {
    const cwd = path.join(root, "cwd");
    await mkdir(cwd, { recursive: true });
    const result = await clipguard(["model", "pull"], { HF_ENDPOINT: hub.url }, cwd);
    expect(result.status).toBe(0);
    const dir = path.join(cwd, "models", "clip-vit-base-patch32");
    expect(result.stdout).toMatch(new RegExp(`^pulled ${REPO}@[0-9a-f]{12} \\(variant fp32\\) into ${dir}\\n$`));
    // plain progress lines when stderr is no terminal
    expect(result.stderr).toContain("onnx/vision_model.onnx 1.8 kB …\n");
    expect(result.stderr).toContain("onnx/vision_model.onnx 1.8 kB done\n");
    // only the layout: no README, .gitattributes or quantized files; no temporary directory left
    expect(await listFiles(dir)).toEqual(LAYOUT);
    expect(await readdir(path.join(cwd, "models"))).toEqual(["clip-vit-base-patch32"]);
    for (const f of LAYOUT) expect(await readFile(path.join(dir, f))).toEqual(await readFile(path.join("models/demo", f)));
    // files come from the resolved commit; LFS files through the CDN
    const resolves = hub.requests.filter((r) => r.path.includes("/resolve/"));
    expect(resolves.every((r) => /\/resolve\/[0-9a-f]{40}\//.test(r.path))).toBe(true);
    expect(hub.requests.filter((r) => r.server === "cdn").map((r) => r.file).sort()).toEqual(["onnx/text_model.onnx", "onnx/vision_model.onnx"]);

    const pulled = await clipguard(["score", "--model", dir, IMAGE], {});
    const bundled = await clipguard(["score", IMAGE], {});
    expect(pulled.status).toBe(0);
    expect(JSON.parse(pulled.stdout)).toMatchObject({ decision: "block" });
    expect(pulled.stdout).toBe(bundled.stdout); // same files, same fingerprint, same verdict
  });

  it("pulls --variant quantized as onnx/*_model_quantized.onnx", async () => {
    const dir = await fresh();
    const result = await clipguard(["model", "pull", REPO, "--variant", "quantized", "--dir", dir], { HF_ENDPOINT: hub.url });
    expect(result.status).toBe(0);
    expect(await listFiles(dir)).toEqual(LAYOUT.map((f) => f.replace(/_model\.onnx$/, "_model_quantized.onnx")).sort());
    await expect(openModelDirectory(dir, "quantized")).resolves.toMatchObject({ variant: "quantized" });
  });

  it("refuses a variant the repository lacks, naming the ones it has", async () => {
    const dir = await fresh();
    const result = await clipguard(["model", "pull", REPO, "--variant", "fp16", "--dir", dir], { HF_ENDPOINT: hub.url });
    expectFailure(result, "CLIPGUARD_E_DOWNLOAD_FILE_MISSING", 'variant "fp16"', "onnx/text_model_fp16.onnx", "variants in the repository: fp32, quantized");
    expect(existsSync(path.dirname(dir)) ? await readdir(path.dirname(dir)) : []).toEqual([]);
  });

  it("reports a missing repository or revision", async () => {
    const dir = await fresh();
    expectFailure(await clipguard(["model", "pull", "nobody/no-such-model", "--dir", dir], { HF_ENDPOINT: hub.url }), "CLIPGUARD_E_DOWNLOAD_NOT_FOUND", "repository nobody/no-such-model not found", "HTTP 401", "HF_TOKEN");
    expectFailure(await clipguard(["model", "pull", REPO, "--revision", "v9", "--dir", dir], { HF_ENDPOINT: hub.url }), "CLIPGUARD_E_DOWNLOAD_NOT_FOUND", 'revision "v9"', "HTTP 404");
    expect(existsSync(dir)).toBe(false);
  });

  it("sends HF_TOKEN to the Hub only, and never prints it", async () => {
    hub.token = TOKEN;
    const dir = await fresh();
    const anonymous = await clipguard(["model", "pull", REPO, "--dir", dir], { HF_ENDPOINT: hub.url });
    expectFailure(anonymous, "CLIPGUARD_E_DOWNLOAD_NOT_FOUND", "HF_TOKEN");
    hub.requests.length = 0;

    const result = await clipguard(["model", "pull", REPO, "--dir", dir], { HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN });
    expect(result.status).toBe(0);
    const hubRequests = hub.requests.filter((r) => r.server === "hub");
    const cdnRequests = hub.requests.filter((r) => r.server === "cdn");
    expect(hubRequests.length).toBeGreaterThan(0);
    expect(hubRequests.every((r) => r.authorization === `Bearer ${TOKEN}`)).toBe(true);
    expect(cdnRequests.length).toBe(2);
    expect(cdnRequests.every((r) => r.authorization === undefined)).toBe(true);
    for (const out of [result.stdout, result.stderr, anonymous.stdout, anonymous.stderr]) expect(out).not.toContain("TestToken");
  });

  it("rejects a file whose sha256 differs from the published one, deleting it and leaving no target", async () => {
    hub.corrupt.add("onnx/vision_model.onnx");
    const dir = await fresh();
    const result = await clipguard(["model", "pull", REPO, "--dir", dir], { HF_ENDPOINT: hub.url });
    expectFailure(result, "CLIPGUARD_E_DOWNLOAD_CHECKSUM", "onnx/vision_model.onnx: sha256", "deleted the partial download");
    expect(existsSync(dir)).toBe(false);
    const [temp, ...others] = (await readdir(path.dirname(dir))).filter((d) => d.startsWith("model.partial-"));
    expect(others).toEqual([]);
    const kept = await listFiles(path.join(path.dirname(dir), temp!));
    expect(kept).not.toContain("onnx/vision_model.onnx.part");
    expect(kept).not.toContain("onnx/vision_model.onnx");

    // the next run keeps the verified files and fetches only the rejected one
    hub.corrupt.clear();
    hub.requests.length = 0;
    const again = await clipguard(["model", "pull", REPO, "--dir", dir], { HF_ENDPOINT: hub.url });
    expect(again.status).toBe(0);
    expect(again.stderr).toContain("onnx/text_model.onnx already downloaded");
    expect(hub.requests.filter((r) => r.file !== undefined).map((r) => r.file)).toEqual(["onnx/vision_model.onnx", "onnx/vision_model.onnx"]);
    expect(await readdir(path.dirname(dir))).toEqual(["model"]);
  });

  it("resumes a download cut mid-file with a range request, within the run", async () => {
    hub.cut.set("onnx/vision_model.onnx", { at: CUT, times: 1 });
    const dir = await fresh();
    const result = await clipguard(["model", "pull", BIG, "--dir", dir], { HF_ENDPOINT: hub.url });
    expect(result.status).toBe(0);
    const cdn = hub.requests.filter((r) => r.server === "cdn" && r.file === "onnx/vision_model.onnx");
    expect(cdn.map((r) => r.range)).toEqual([undefined, expect.stringMatching(/^bytes=\d+-$/)]);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(cdn[1]!.range!)![1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(CUT); // fetch may drop a few chunks it had queued when the connection died
    expect(result.stderr).toContain(`onnx/vision_model.onnx 2.1 MB … resuming at ${formatBytes(resumedAt)}\n`);
    const served = hub.repos.get(BIG)!.files["onnx/vision_model.onnx"]!;
    expect(sha256(await readFile(path.join(dir, "onnx/vision_model.onnx")))).toBe(sha256(served));
  });

  it("keeps the partial file of a failed run and resumes it on the next run (Range: bytes=N-), verified", async () => {
    hub.cut.set("onnx/vision_model.onnx", { at: CUT, times: Infinity });
    const dir = await fresh();
    const options: PullOptions = { endpoint: hub.url, repo: BIG, dir, retryDelaysMs: [1, 1] };
    const first = await pullError(options);
    expect(first.code).toBe("CLIPGUARD_E_DOWNLOAD_NETWORK");
    expect(first.message).toContain("gave up after");
    expect(existsSync(dir)).toBe(false);
    const temp = (await readdir(path.dirname(dir))).find((d) => d.startsWith("model.partial-"))!;
    const part = path.join(path.dirname(dir), temp, "onnx", "vision_model.onnx.part");
    const partial = (await stat(part)).size;
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThanOrEqual(CUT);

    hub.cut.clear();
    hub.requests.length = 0;
    const reporter = recorder();
    const result = await pullModel({ ...options, reporter });
    expect([...result.files].sort()).toEqual(LAYOUT);
    expect(hub.requests.filter((r) => r.server === "cdn").map((r) => [r.file, r.range])).toEqual([["onnx/vision_model.onnx", `bytes=${partial}-`]]);
    expect(reporter.events).toContain(`start onnx/vision_model.onnx ${partial}`);
    expect(reporter.events).toContain("cached onnx/text_model.onnx");
    const served = hub.repos.get(BIG)!.files["onnx/vision_model.onnx"]!;
    expect(sha256(await readFile(path.join(dir, "onnx/vision_model.onnx")))).toBe(sha256(served));
    expect(await readdir(path.dirname(dir))).toEqual(["model"]);
  });

  it("starts over when the server ignores the range (200) or the partial file is stale", async () => {
    hub.cut.set("onnx/vision_model.onnx", { at: CUT, times: 1 });
    const dir = await fresh();
    const options: PullOptions = { endpoint: hub.url, repo: BIG, dir, retryDelaysMs: [] };
    expect((await pullError(options)).code).toBe("CLIPGUARD_E_DOWNLOAD_NETWORK");
    const temp = (await readdir(path.dirname(dir))).find((d) => d.startsWith("model.partial-"))!;
    const part = path.join(path.dirname(dir), temp, "onnx", "vision_model.onnx.part");

    // 200 to a range request: the body is the whole file, written from the start
    hub.ignoreRange = true;
    hub.cut.set("onnx/vision_model.onnx", { at: CUT + 100, times: 1 });
    expect((await pullError(options)).code).toBe("CLIPGUARD_E_DOWNLOAD_NETWORK");
    expect((await stat(part)).size).toBeLessThanOrEqual(CUT + 100); // rewritten from the start, not appended
    hub.ignoreRange = false;

    // a partial from an older version of the file: resumed, fails the checksum, restarted once
    await writeFile(part, Buffer.alloc(CUT, 1));
    hub.requests.length = 0;
    await pullModel(options);
    expect(hub.requests.filter((r) => r.server === "cdn").map((r) => r.range)).toEqual([`bytes=${CUT}-`, undefined]);
    await expect(openModelDirectory(dir)).resolves.toBeDefined();
  });

  it("refuses an existing target unless --force, which replaces it", async () => {
    const dir = await fresh();
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "mine.txt"), "keep me");
    const refused = await clipguard(["model", "pull", REPO, "--dir", dir], { HF_ENDPOINT: hub.url });
    expectFailure(refused, "CLIPGUARD_E_DOWNLOAD_TARGET_EXISTS", dir, "--force");
    expect(hub.requests).toEqual([]); // refused before any download
    expect(await readFile(path.join(dir, "mine.txt"), "utf8")).toBe("keep me");

    const forced = await clipguard(["model", "pull", REPO, "--dir", dir, "--force"], { HF_ENDPOINT: hub.url });
    expect(forced.status).toBe(0);
    expect(await listFiles(dir)).toEqual(LAYOUT);
    expect(await readdir(path.dirname(dir))).toEqual(["model"]);
  });

  it("fails clearly when the Hub is unreachable (after retries) or stalls", async () => {
    const port = await closedPort();
    const dir = await fresh();
    const refused = await pullError({ endpoint: `http://127.0.0.1:${port}`, dir, retryDelaysMs: [1, 1, 1] });
    expect(refused.code).toBe("CLIPGUARD_E_DOWNLOAD_NETWORK");
    expect(refused.message).toContain("ECONNREFUSED");
    expect(refused.message).toContain("gave up after 4 attempts");

    const cli = await clipguard(["model", "pull", "--dir", dir], { HF_ENDPOINT: `http://127.0.0.1:${port}` });
    expectFailure(cli, "CLIPGUARD_E_DOWNLOAD_NETWORK", `http://127.0.0.1:${port}/api/models/${REPO}/revision/main`, "ECONNREFUSED");
    expect(existsSync(dir)).toBe(false);

    // accepts connections, never answers
    const silent = http.createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    try {
      const { port: silentPort } = silent.address() as AddressInfo;
      const stalled = await pullError({ endpoint: `http://127.0.0.1:${silentPort}`, dir, retryDelaysMs: [1], stallTimeoutMs: 200 });
      expect(stalled.code).toBe("CLIPGUARD_E_DOWNLOAD_NETWORK");
      expect(stalled.message).toContain("no data from");
      expect(stalled.message).toContain("gave up after 2 attempts");
    } finally {
      silent.closeAllConnections();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  }, 30_000);

  it("follows up to 5 redirects, no more", async () => {
    hub.extraRedirects = 4; // resolve -> 4 hops -> CDN: 5 redirects
    await expect(pullModel({ endpoint: hub.url, dir: await fresh() })).resolves.toMatchObject({ variant: "fp32" });
    hub.extraRedirects = 5;
    const err = await pullError({ endpoint: hub.url, dir: await fresh() });
    expect(err.code).toBe("CLIPGUARD_E_DOWNLOAD_RESPONSE");
    expect(err.message).toContain("redirected more than 5 times");
  });

  it("rejects repository ids and revisions that could leave the Hub's namespace", async () => {
    for (const repo of ["../etc", "a/b/c", "single", "a/..", ".hidden/x", "a/b c", "a/%2e%2e", "-x/y", "a\\b/c"]) {
      expect(() => parseRepoId(repo), repo).toThrow(ClipguardError);
    }
    for (const revision of ["../main", "a//b", "/main", "main/", ".x", "refs/.x", "x.lock", "a b", "%2e%2e", "a..b", ""]) {
      expect(() => checkRevision(revision), revision).toThrow(ClipguardError);
    }
    for (const revision of ["main", "v1.0", "refs/pr/1", "0123456789abcdef0123456789abcdef01234567"]) expect(checkRevision(revision)).toBe(revision);
    expect(parseRepoId("Xenova/clip-vit-base-patch32")).toEqual({ owner: "Xenova", name: "clip-vit-base-patch32" });
    const result = await clipguard(["model", "pull", "../../etc", "--dir", await fresh()], { HF_ENDPOINT: hub.url });
    expectFailure(result, "CLIPGUARD_E_CONFIG", 'invalid repository "../../etc"');
    expect(hub.requests).toEqual([]);
  });
});
