/**
 * The labelled examples of `clipguard eval`, read from one of three layouts:
 *
 * - a folder with one sub-folder per policy id plus `benign/`: an image is labelled with the
 *   sub-folder it is in (searched recursively; hidden files and files at the top level are skipped);
 * - a CSV file of `path,policy_ids` rows (optional header row `path,policy_ids`): ids separated by
 *   `;` or `|`, empty (or `benign`) for a benign image;
 * - a JSONL file of `{"path": …, "policy_ids": […]}` lines (empty array for benign).
 *
 * Paths in a file are relative to that file's folder. This is the boundary where the labels become
 * types: every problem is a `CLIPGUARD_E_LABELS` error naming the file and line.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { parse as parseCsv } from "csv-parse/sync";
import { z } from "zod";
import { ClipguardError } from "../shared/errors.js";

/** The folder name and label that mean "violates no policy". */
export const BENIGN = "benign";

export type LabelFormat = "folders" | "csv" | "jsonl";

export interface LabelledImage {
  /** As resolved for reading: absolute, or relative to the working directory. */
  path: string;
  /** Policy ids the image violates, sorted and unique; empty for a benign image. */
  policyIds: string[];
  /** Where the label was read, for messages: `file:line` or the sub-folder. */
  origin: string;
}

export interface LabelledSet {
  /** The folder or file given. */
  source: string;
  format: LabelFormat;
  images: LabelledImage[];
}

const labelsError = (message: string, cause?: unknown) =>
  new ClipguardError("CLIPGUARD_E_LABELS", message, cause === undefined ? undefined : { cause });

function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === "ENOENT") return "no such file or folder";
  if (code === "EACCES" || code === "EPERM") return "permission denied";
  return err instanceof Error ? err.message : String(err);
}

/**
 * Reads the labelled set at `location` (a folder, a `.csv` or a `.jsonl`/`.ndjson` file).
 * @throws ClipguardError `CLIPGUARD_E_LABELS` when it is missing, unreadable, malformed or empty
 */
export async function loadLabelledSet(location: string): Promise<LabelledSet> {
  let stat;
  try {
    stat = await fs.stat(location);
  } catch (err) {
    throw labelsError(`cannot read the labels ${location}: ${describeFsError(err)}`, err);
  }
  let images: LabelledImage[];
  let format: LabelFormat;
  if (stat.isDirectory()) {
    format = "folders";
    images = await readFolders(location);
  } else {
    const ext = path.extname(location).toLowerCase();
    if (ext === ".csv") format = "csv";
    else if (ext === ".jsonl" || ext === ".ndjson") format = "jsonl";
    else throw labelsError(`the labels ${location} must be a folder, a .csv file or a .jsonl file`);
    let text: string;
    try {
      text = await fs.readFile(location, "utf8");
    } catch (err) {
      throw labelsError(`cannot read the labels ${location}: ${describeFsError(err)}`, err);
    }
    const rows = format === "csv" ? parseCsvLabels(text, location) : parseJsonlLabels(text, location);
    images = resolveRows(rows, location);
  }
  if (images.length === 0) throw labelsError(`the labels ${location} list no images`);
  return { source: location, format, images };
}

/**
 * Refuses labels naming policies that the policies file does not have, naming every one of them
 * (a typo in a folder name would otherwise silently count its images as nothing).
 * @throws ClipguardError `CLIPGUARD_E_LABELS`
 */
export function checkLabelIds(set: LabelledSet, knownIds: readonly string[], policiesFile: string): void {
  const known = new Set(knownIds);
  const unknown = new Map<string, string>();
  for (const image of set.images) {
    for (const id of image.policyIds) if (!known.has(id) && !unknown.has(id)) unknown.set(id, image.origin);
  }
  if (unknown.size === 0) return;
  const listed = [...unknown].map(([id, origin]) => `${JSON.stringify(id)} (${origin})`).join(", ");
  throw labelsError(
    `the labels name policy id${unknown.size > 1 ? "s" : ""} not in ${policiesFile}: ${listed}; ` +
      `policies: ${knownIds.join(", ")}; benign images go under "${BENIGN}"`,
  );
}

// ---------------------------------------------------------------------------------------------
// folders

async function readFolders(root: string): Promise<LabelledImage[]> {
  let entries;
  try {
    entries = await fs.readdir(root, { withFileTypes: true });
  } catch (err) {
    throw labelsError(`cannot read the labels folder ${root}: ${describeFsError(err)}`, err);
  }
  const folders = entries.filter((e) => e.isDirectory() && !e.name.startsWith(".")).map((e) => e.name);
  if (folders.length === 0) {
    throw labelsError(`the labels folder ${root} has no sub-folders: make one per policy id, plus "${BENIGN}/" for benign images`);
  }
  const images: LabelledImage[] = [];
  for (const folder of folders.sort()) {
    const files = await listFiles(path.join(root, folder));
    const policyIds = folder === BENIGN ? [] : [folder];
    for (const file of files) images.push({ path: file, policyIds, origin: `${folder}/` });
  }
  return images;
}

/** Regular files under `dir`, recursively, sorted, hidden names skipped. */
async function listFiles(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (err) {
    throw labelsError(`cannot read the labels folder ${dir}: ${describeFsError(err)}`, err);
  }
  const files: string[] = [];
  for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    if (entry.name.startsWith(".")) continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listFiles(full)));
    else if (entry.isFile() || entry.isSymbolicLink()) files.push(full);
  }
  return files;
}

// ---------------------------------------------------------------------------------------------
// CSV and JSONL

interface LabelRow {
  path: string;
  ids: string[];
  line: number;
}

const csvRecords = z.array(z.object({ record: z.array(z.string()), info: z.object({ lines: z.number() }) }));

function splitIds(field: string): string[] {
  return field
    .split(/[;|]/)
    .map((id) => id.trim())
    .filter((id) => id.length > 0);
}

function parseCsvLabels(text: string, file: string): LabelRow[] {
  let parsed: unknown;
  try {
    parsed = parseCsv(text, { bom: true, info: true, skip_empty_lines: true, relax_column_count: true, trim: true });
  } catch (err) {
    throw labelsError(`${file}: not valid CSV: ${err instanceof Error ? err.message : String(err)}`, err);
  }
  const records = csvRecords.parse(parsed);
  const rows: LabelRow[] = [];
  records.forEach(({ record, info }, index) => {
    const [first = "", second = ""] = record;
    if (index === 0 && first.toLowerCase() === "path" && second.toLowerCase() === "policy_ids") return;
    if (record.length > 2) {
      throw labelsError(`${file}:${info.lines}: expected 2 columns (path,policy_ids), got ${record.length}; quote paths that contain commas`);
    }
    rows.push({ path: first, ids: splitIds(second), line: info.lines });
  });
  return rows;
}

const jsonlRow = z.strictObject({ path: z.string(), policy_ids: z.array(z.string()) });

function parseJsonlLabels(text: string, file: string): LabelRow[] {
  const rows: LabelRow[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    if (raw.trim().length === 0) return;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (err) {
      throw labelsError(`${file}:${line}: not valid JSON: ${err instanceof Error ? err.message : String(err)}`, err);
    }
    const parsed = jsonlRow.safeParse(value);
    if (!parsed.success) {
      throw labelsError(`${file}:${line}: expected {"path": "…", "policy_ids": ["…"]} (an empty array for benign), got ${raw.slice(0, 120)}`);
    }
    rows.push({ path: parsed.data.path, ids: parsed.data.policy_ids.map((id) => id.trim()).filter((id) => id.length > 0), line });
  });
  return rows;
}

function resolveRows(rows: readonly LabelRow[], file: string): LabelledImage[] {
  const base = path.dirname(file);
  const seen = new Map<string, number>();
  return rows.map((row): LabelledImage => {
    const origin = `${file}:${row.line}`;
    if (row.path.length === 0) throw labelsError(`${origin}: the path is empty`);
    const ids = [...new Set(row.ids)].sort();
    if (ids.includes(BENIGN) && ids.length > 1) throw labelsError(`${origin}: "${BENIGN}" cannot be combined with policy ids`);
    const resolved = path.resolve(base, row.path);
    const first = seen.get(resolved);
    if (first !== undefined) throw labelsError(`${origin}: ${row.path} is listed twice (first at line ${first}); list each image once with all its policy ids`);
    seen.set(resolved, row.line);
    return { path: resolved, policyIds: ids.filter((id) => id !== BENIGN), origin };
  });
}
