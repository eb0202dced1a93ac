/**
 * Map a data path (as zod reports it, e.g. `["policies", 1, "thresholds"]`) back to a place in the
 * YAML text, so that problems can say `file:line:col`.
 */
import { isAlias, isMap, isScalar, isSeq, type Document, type LineCounter } from "yaml";

/** 1-based line and column. */
export interface TextPosition {
  line: number;
  col: number;
}

function startOf(node: unknown): number | undefined {
  if (node === null || typeof node !== "object" || !("range" in node)) return undefined;
  const range = (node as { range?: readonly number[] | null }).range;
  return range?.[0];
}

/** A scalar with no text (`key:` followed by nothing) has no useful position of its own. */
function isEmptyScalar(node: unknown): boolean {
  if (!isScalar(node)) return false;
  const range = node.range;
  return node.value === null && (range === undefined || range === null || range[0] === range[1]);
}

/**
 * Byte offset of the text that `path` points at. Where a path leads to a scalar, that is the scalar;
 * where it leads to a mapping or list value (which in block style starts on the next line), it is
 * the key that introduces it, e.g. `thresholds:`; list items point at the item. With
 * `pointAtKey`, the last segment points at its key even for scalar values (used for unknown keys).
 * A path that leaves the document (a missing key, or data reached through an alias) stops at the
 * deepest node that exists.
 */
export function offsetOfPath(doc: Document, path: readonly PropertyKey[], pointAtKey = false): number {
  let node: unknown = doc.contents;
  let offset = startOf(node) ?? 0;
  for (const [index, segment] of path.entries()) {
    const last = index === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment));
      if (!pair) return offset;
      const keyStart = startOf(pair.key) ?? offset;
      const value = pair.value;
      const scalarLike = (isScalar(value) && !isEmptyScalar(value)) || isAlias(value);
      offset = scalarLike && !(pointAtKey && last) ? (startOf(value) ?? keyStart) : keyStart;
      node = value;
    } else if (isSeq(node) && typeof segment === "number") {
      const item: unknown = node.items[segment];
      if (item === undefined) return offset;
      offset = startOf(item) ?? offset;
      node = item;
    } else {
      return offset;
    }
  }
  return offset;
}

export function positionOf(lineCounter: LineCounter, offset: number): TextPosition {
  const { line, col } = lineCounter.linePos(offset);
  return { line, col };
}
