import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";

let containerUrl: Promise<string> | undefined;

/**
 * The Redis the tests use: REDIS_URL when set (CI and this project's machines), otherwise a
 * throwaway container through testcontainers (a laptop with Docker needs nothing else).
 */
export async function testRedisUrl(): Promise<string> {
  const fromEnv = process.env["REDIS_URL"];
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv;
  containerUrl ??= (async () => {
    const { GenericContainer, Wait } = await import("testcontainers");
    const container = await new GenericContainer("redis:7-alpine")
      .withExposedPorts(6379)
      .withWaitStrategy(Wait.forLogMessage("Ready to accept connections"))
      .start();
    return `redis://${container.getHost()}:${container.getMappedPort(6379)}`;
  })();
  return containerUrl;
}

/** A unique namespace for one test: queue name, stream and key prefix never collide. */
export function testNamespace(): string {
  return `test-${randomUUID()}`;
}

/** Deletes every key of a namespace (queues use `bull:<queue>:*`, streams `<ns>:*`). */
export async function cleanupNamespace(redis: Redis, namespace: string): Promise<void> {
  for (const pattern of [`*${namespace}*`]) {
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 500);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== "0");
  }
}
