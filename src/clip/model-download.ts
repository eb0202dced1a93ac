import { createHash } from "node:crypto";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { ClipguardError } from "../shared/errors.js";
import { checkRevision, HubClient, parseRepoId, type HubClientOptions, type HubFile } from "./hub-client.js";
import { onnxFileName, openModelDirectory } from "./model-dir.js";
import { downloadVerified, type DownloadReporter } from "./resumable-download.js";

export type { DownloadReporter } from "./resumable-download.js";

/** @default repository of `clipguard model pull` */
export const DEFAULT_MODEL_REPO = "Xenova/clip-vit-base-patch32";

export interface PullOptions extends Omit<HubClientOptions, "endpoint"> {
  /** `owner/name` on the Hub. @default "Xenova/clip-vit-base-patch32" */
  repo?: string;
  /** Branch, tag or commit. @default "main" */
  revision?: string;
  /** `fp32` → onnx/*_model.onnx, else onnx/*_model_<variant>.onnx. @default "fp32" */
  variant?: string;
  /** Target model directory. @default models/<repo name>, relative to the current directory */
  dir?: string;
  /** Replace an existing target directory. @default false */
  force?: boolean;
  /** @default "https://huggingface.co" */
  endpoint?: string;
  reporter?: DownloadReporter;
}

export interface PullResult {
  dir: string;
  repo: string;
  revision: string;
  /** The commit every file was downloaded from. */
  commit: string;
  variant: string;
  files: string[];
}

/** The files of the model layout (see model-dir.ts) for one variant; optional ones are skipped when the repository lacks them. */
export function layoutFiles(variant: string): { path: string; required: boolean }[] {
  return [
    { path: "config.json", required: true },
    { path: "preprocessor_config.json", required: true },
    { path: "tokenizer.json", required: true },
    { path: "tokenizer_config.json", required: false },
    { path: "special_tokens_map.json", required: false },
    { path: `onnx/${onnxFileName("text", variant)}`, required: true },
    { path: `onnx/${onnxFileName("vision", variant)}`, required: true },
  ];
}

/** Variants the repository has both towers of, for the "missing variant" message. */
function variantsIn(files: ReadonlyMap<string, HubFile>): string[] {
  const variants: string[] = [];
  for (const name of files.keys()) {
    const match = /^onnx\/vision_model(?:_([a-z0-9]+))?\.onnx$/.exec(name);
    if (match === null) continue;
    const variant = match[1] ?? "fp32";
    if (files.has(`onnx/${onnxFileName("text", variant)}`)) variants.push(variant);
  }
  return variants.sort();
}

const exists = async (p: string) => (await stat(p).catch(() => undefined)) !== undefined;

function refuseExisting(dir: string): never {
  throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_TARGET_EXISTS", `${dir} already exists; pass --force to replace it, or --dir to pull elsewhere`);
}

/**
 * Downloads a CLIP export in the Hugging Face ONNX layout from the Hub into a model directory.
 *
 * Files go to `<dir>.partial-<hash>` beside the target, which is kept when anything fails so that
 * the next run resumes; each file is verified against the Hub's checksum, the directory must open
 * with `openModelDirectory`, and only then is it renamed to `dir` (replacing it with `force`).
 * @throws CLIPGUARD_E_CONFIG (bad repo/revision/variant), CLIPGUARD_E_DOWNLOAD_* and CLIPGUARD_E_MODEL
 */
export async function pullModel(options: PullOptions = {}): Promise<PullResult> {
  const repo = options.repo ?? DEFAULT_MODEL_REPO;
  const { name } = parseRepoId(repo);
  const revision = checkRevision(options.revision ?? "main");
  const variant = options.variant ?? "fp32";
  const wanted = (() => {
    try {
      return layoutFiles(variant);
    } catch (err) {
      throw new ClipguardError("CLIPGUARD_E_CONFIG", (err as Error).message, { cause: err });
    }
  })();
  const dir = path.resolve(options.dir ?? path.join("models", name));
  const force = options.force ?? false;
  if (!force && (await exists(dir))) refuseExisting(dir);

  const client = new HubClient({ ...options, endpoint: options.endpoint ?? "https://huggingface.co" });
  const info = await client.repoInfo(repo, revision);
  const plan: HubFile[] = [];
  for (const file of wanted) {
    const listed = info.files.get(file.path);
    if (listed !== undefined) plan.push(listed);
    else if (file.required) {
      const isOnnx = file.path.startsWith("onnx/");
      const hint = isOnnx ? `; variants in the repository: ${variantsIn(info.files).join(", ") || "none"}` : "";
      const what = isOnnx ? `variant "${variant}" (${file.path})` : file.path;
      throw new ClipguardError("CLIPGUARD_E_DOWNLOAD_FILE_MISSING", `${repo}@${revision} has no ${what}${hint}`);
    }
  }

  const key = createHash("sha256").update(`${repo}\n${revision}\n${variant}`).digest("hex").slice(0, 12);
  const temp = `${dir}.partial-${key}`;
  const reporter = options.reporter ?? { start() {}, progress() {}, done() {} };
  for (const file of plan) {
    const dest = path.join(temp, ...file.path.split("/"));
    await mkdir(path.dirname(dest), { recursive: true });
    await downloadVerified(client, client.fileUrl(repo, info.commit, file.path), file, dest, reporter);
  }

  try {
    await openModelDirectory(temp, variant);
  } catch (err) {
    // complete and verified, yet not a model: downloading again would not help
    await rm(temp, { recursive: true, force: true });
    throw err;
  }
  await moveIntoPlace(temp, dir, force, key);
  return { dir, repo, revision, commit: info.commit, variant, files: plan.map((f) => f.path) };
}

/** Renames the finished temporary directory to the target; with `force`, the old target goes only after. */
async function moveIntoPlace(temp: string, dir: string, force: boolean, key: string): Promise<void> {
  if (!(await exists(dir))) {
    await rename(temp, dir);
    return;
  }
  if (!force) refuseExisting(dir); // appeared while we were downloading
  const old = `${dir}.old-${key}`;
  await rm(old, { recursive: true, force: true });
  await rename(dir, old);
  await rename(temp, dir);
  await rm(old, { recursive: true, force: true });
}
