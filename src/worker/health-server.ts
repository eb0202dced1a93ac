import Fastify, { type FastifyInstance } from "fastify";
import type { Registry } from "prom-client";

export interface HealthServerOptions {
  host: string;
  port: number;
  registry: Registry;
  /** Resolves to the reasons the worker is not ready; empty when it is. */
  readiness: () => Promise<string[]>;
}

/** `/metrics` (Prometheus text), `/healthz` (the process is alive), `/readyz` (model, policies, Redis). */
export async function startHealthServer(options: HealthServerOptions): Promise<{ server: FastifyInstance; port: number }> {
  const server = Fastify({ logger: false });
  server.get("/metrics", async (_request, reply) => {
    const body = await options.registry.metrics();
    return reply.type(options.registry.contentType).send(body);
  });
  server.get("/healthz", async () => ({ status: "ok" }));
  server.get("/readyz", async (_request, reply) => {
    const problems = await options.readiness();
    if (problems.length > 0) return reply.code(503).send({ status: "not ready", problems });
    return { status: "ready" };
  });
  await server.listen({ host: options.host, port: options.port });
  const address = server.server.address();
  const port = typeof address === "object" && address !== null ? address.port : options.port;
  return { server, port };
}
