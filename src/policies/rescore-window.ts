/**
 * The window of `clipguard rescore` and `POST /v1/rescore`: verdict stream entries since a
 * duration ago, or after a stream id. Pure parsing, no I/O.
 */
import { ClipguardError } from "../shared/errors.js";

export type RescoreWindow = { since: string } | { from: string };

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/;
const ENTRY_ID = /^\d+(-\d+)?$/;

/**
 * `90s`, `15m`, `2h`, `7d`, `1w`, `500ms` → milliseconds.
 * @throws ClipguardError CLIPGUARD_E_CONFIG for anything else
 */
export function parseDuration(text: string): number {
  const match = DURATION.exec(text.trim());
  const ms = match === null ? NaN : Number(match[1]) * (UNIT_MS[match[2] ?? ""] ?? NaN);
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new ClipguardError("CLIPGUARD_E_CONFIG", `"${text}" is not a duration; use a number and a unit: 500ms, 90s, 15m, 2h, 7d, 1w`);
  }
  return Math.round(ms);
}

/**
 * The XRANGE start of a window: `since` → the entries of the last DURATION (stream ids start
 * with the time in ms); `from` → the entries after that id (exclusive, as `clipguard verdicts
 * --from`), `0` for the whole stream.
 * @throws ClipguardError CLIPGUARD_E_CONFIG for a bad duration or id
 */
export function windowStart(window: RescoreWindow, now = Date.now()): string {
  if ("since" in window) return String(Math.max(0, now - parseDuration(window.since)));
  if (!ENTRY_ID.test(window.from)) {
    throw new ClipguardError("CLIPGUARD_E_CONFIG", `"${window.from}" is not a stream id (<ms>-<seq>, <ms>, or 0 for the whole stream)`);
  }
  return window.from === "0" ? "-" : `(${window.from}`;
}
