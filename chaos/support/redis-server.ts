/**
 * A redis-server of the chaos suite's own: its own port and data directory, so the machine's
 * Redis is never touched, and a restart keeps the port (clients reconnect to the same URL).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";

export interface RedisServerOptions {
  /** Append-only file with `appendfsync everysec` (the Redis-restart scenario). @default false */
  aof?: boolean;
  /** Extra `--name value` arguments. */
  args?: string[];
}

export interface RedisServer {
  url: string;
  port: number;
  /** Stops the server (SIGTERM: Redis writes its AOF and exits) and starts it again on the same port and directory. */
  restart(options?: { downMs?: number }): Promise<void>;
  /** Stops the server; it can be started again with start(). */
  stopServer(signal?: NodeJS.Signals): Promise<void>;
  start(): Promise<void>;
  /** Stops the server and removes its directory. */
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPing(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 500 });
    client.on("error", () => undefined); // refused while the server starts: connect() rejects too
    try {
      await client.connect();
      if ((await client.ping()) === "PONG") return;
    } catch {
      // not up yet
    } finally {
      client.disconnect();
    }
    if (Date.now() > deadline) throw new Error(`redis-server at ${url} did not answer within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), "clipguard-chaos-redis-"));
  const url = `redis://127.0.0.1:${port}`;
  const args = [
    "--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "",
    "--maxmemory-policy", "noeviction",
    "--appendonly", options.aof === true ? "yes" : "no",
    ...(options.aof === true ? ["--appendfsync", "everysec"] : []),
    "--logfile", path.join(dir, "redis.log"),
    ...(options.args ?? []),
  ];
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const start = async () => {
    const proc = spawn("redis-server", args, { stdio: "ignore" });
    child = proc;
    exited = new Promise((resolve) => proc.once("exit", () => resolve()));
    proc.once("error", () => undefined);
    await waitForPing(url, 10_000);
  };
  const stopServer = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await exited;
  };
  await start();
  return {
    url,
    port,
    start,
    stopServer,
    async restart({ downMs = 0 } = {}) {
      await stopServer("SIGTERM");
      if (downMs > 0) await new Promise((resolve) => setTimeout(resolve, downMs));
      await start();
    },
    async close() {
      await stopServer("SIGTERM");
      await rm(dir, { recursive: true, force: true });
    },
  };
}
