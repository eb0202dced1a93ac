/**
 * What a Redis server holds, for the API-load scenario's "memory returns to its baseline" check:
 * `INFO memory` used_memory, and every key grouped by its shape (ids replaced by `*`), with the
 * group's key count, how many of them expire, and their `MEMORY USAGE` sum. Comparing a census
 * before and after a load says what the load left behind and whether it is bounded.
 */
import type { Redis } from "ioredis";

export interface KeyGroup {
  /** The key shape, e.g. `clipguard:verdicts:published:*` or `bull:moderation:*` (a job hash). */
  shape: string;
  keys: number;
  /** Keys with a TTL: they go away by themselves. */
  expiring: number;
  /** Sum of `MEMORY USAGE` over the group's keys, bytes. */
  bytes: number;
  /** Entries of the group's streams, lists, sets and hashes (XLEN, LLEN, ZCARD, …). */
  entries: number;
}

export interface RedisCensus {
  usedMemory: number;
  /** The other `INFO memory` figures: what used_memory is made of (dataset, overhead, clients, scripts). */
  memory: Record<string, number>;
  keys: number;
  groups: Map<string, KeyGroup>;
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

/** The key with its per-job and per-image parts replaced by `*`. */
export function keyShape(key: string): string {
  return key
    .replace(UUID, "*")
    .replace(/^(clipguard:ref:)[A-Za-z0-9_-]+$/, "$1*")
    .replace(/[0-9a-f]{64}/g, "*")
    .replace(/:[0-9a-f]{40,}(?=:|$)/g, ":*");
}

const MEMORY_FIELDS = ["used_memory", "used_memory_dataset", "used_memory_overhead", "mem_clients_normal", "used_memory_scripts", "used_memory_vm_eval"];

/** The `INFO memory` figures named in MEMORY_FIELDS (bytes). */
export async function memoryInfo(redis: Redis): Promise<Record<string, number>> {
  const info = await redis.info("memory");
  const figures: Record<string, number> = {};
  for (const field of MEMORY_FIELDS) {
    const match = new RegExp(`^${field}:(\\d+)`, "m").exec(info);
    if (match?.[1] !== undefined) figures[field] = Number(match[1]);
  }
  if (figures["used_memory"] === undefined) throw new Error("INFO memory has no used_memory");
  return figures;
}

async function entriesOf(redis: Redis, key: string, type: string): Promise<number> {
  switch (type) {
    case "stream":
      return redis.xlen(key);
    case "list":
      return redis.llen(key);
    case "zset":
      return redis.zcard(key);
    case "set":
      return redis.scard(key);
    case "hash":
      return redis.hlen(key);
    default:
      return 1;
  }
}

/** A census of every key (SCAN, so the server keeps serving while it runs). */
export async function takeCensus(redis: Redis): Promise<RedisCensus> {
  const groups = new Map<string, KeyGroup>();
  let keys = 0;
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "COUNT", 1000);
    cursor = next;
    for (const key of batch) {
      const [type, ttl, bytes] = await Promise.all([redis.type(key), redis.pttl(key), redis.memory("USAGE", key, "SAMPLES", 0)]);
      if (ttl === -2) continue; // expired or deleted meanwhile
      const shape = keyShape(key);
      const group = groups.get(shape) ?? { shape, keys: 0, expiring: 0, bytes: 0, entries: 0 };
      group.keys += 1;
      if (ttl >= 0) group.expiring += 1;
      group.bytes += bytes ?? 0;
      group.entries += await entriesOf(redis, key, type);
      groups.set(shape, group);
      keys += 1;
    }
  } while (cursor !== "0");
  const memory = await memoryInfo(redis);
  return { usedMemory: memory["used_memory"] ?? 0, memory, keys, groups };
}

export interface CensusChange {
  shape: string;
  keys: number;
  expiring: number;
  bytes: number;
  entries: number;
}

/** Per key shape: what `after` has more (or less) than `before`, largest byte change first. */
export function censusChanges(before: RedisCensus, after: RedisCensus): CensusChange[] {
  const shapes = new Set([...before.groups.keys(), ...after.groups.keys()]);
  const changes: CensusChange[] = [];
  for (const shape of shapes) {
    const a = before.groups.get(shape) ?? { keys: 0, expiring: 0, bytes: 0, entries: 0 };
    const b = after.groups.get(shape) ?? { keys: 0, expiring: 0, bytes: 0, entries: 0 };
    const change = { shape, keys: b.keys - a.keys, expiring: b.expiring - a.expiring, bytes: b.bytes - a.bytes, entries: b.entries - a.entries };
    if (change.keys !== 0 || change.bytes !== 0 || change.entries !== 0) changes.push(change);
  }
  return changes.sort((x, y) => Math.abs(y.bytes) - Math.abs(x.bytes));
}
