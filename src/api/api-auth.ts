import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { ClipguardError } from "../shared/errors.js";

declare module "fastify" {
  interface FastifyRequest {
    /** sha256 (hex) of the request's API key, or of its IP address when authentication is off: the rate-limit key. */
    clientKey: string;
  }
  interface FastifyContextConfig {
    /** Open to requests without an API key (health, readiness, the OpenAPI document). */
    public?: boolean;
  }
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

const BEARER = /^Bearer[ \t]+([^\s]+)[ \t]*$/i;

/**
 * The accepted API keys, held only as sha256 digests. A presented key is hashed and compared
 * with every digest through `timingSafeEqual` (hashing first gives equal lengths and hides the
 * key length; comparing with all of them hides which one matched).
 */
export class ApiKeyring {
  private readonly digests: Buffer[];

  constructor(keys: readonly string[]) {
    this.digests = keys.map(sha256);
  }

  get size(): number {
    return this.digests.length;
  }

  /** The key's digest when it is one of the keys, else undefined. */
  verify(presented: string): Buffer | undefined {
    const digest = sha256(presented);
    let matched = false;
    for (const candidate of this.digests) matched = timingSafeEqual(candidate, digest) || matched;
    return matched ? digest : undefined;
  }
}

/**
 * The onRequest hook: 401 CLIPGUARD_E_UNAUTHORIZED without a valid `Authorization: Bearer <key>`
 * (routes marked `public` are open). `keyring` undefined means authentication is off.
 */
export function authHook(keyring: ApiKeyring | undefined) {
  return async function authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (request.routeOptions.config.public === true) return;
    if (keyring === undefined) {
      request.clientKey = createHash("sha256").update(`ip:${request.ip}`).digest("hex");
      return;
    }
    const match = BEARER.exec(request.headers.authorization ?? "");
    const digest = match?.[1] === undefined ? undefined : keyring.verify(match[1]);
    if (digest === undefined) {
      void reply.header("www-authenticate", 'Bearer realm="clipguard"');
      throw new ClipguardError(
        "CLIPGUARD_E_UNAUTHORIZED",
        match === null ? "send an API key as `Authorization: Bearer <key>`" : "the API key is not valid",
      );
    }
    request.clientKey = digest.toString("hex");
  };
}
