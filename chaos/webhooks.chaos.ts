/**
 * 7. Webhooks: a loopback receiver verifies what real workers send with the `standardwebhooks`
 * package, as a customer would. Tampered bodies and ids, stale and future timestamps and a wrong
 * secret must fail verification; rotating the secret (old → old and new → new) must keep every
 * delivery verifiable by a receiver holding either secret while both are in use.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { Webhook } from "standardwebhooks";
import { solidPng, RED } from "../test/support/fixtures.js";
import { report } from "./support/figures.js";
import { startServer, type TestServer } from "./support/hostile-net.js";
import { startHostileWorker } from "./support/hostile-worker.js";

const secret = () => `whsec_${randomBytes(32).toString("base64")}`;
const OLD = secret();
const NEW = secret();
const WRONG = secret();
/** Standard Webhooks' timestamp tolerance (the package's WEBHOOK_TOLERANCE_IN_SECONDS). */
const TOLERANCE_S = 5 * 60;

interface Delivery {
  headers: Record<string, string>;
  body: string;
}

/** Does `secretText` verify `d`, with the receiver's clock moved by `skewS` seconds? */
function verifies(secretText: string, d: Delivery, skewS = 0): boolean {
  if (skewS !== 0) {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(Date.now() + skewS * 1000);
  }
  try {
    new Webhook(secretText).verify(d.body, d.headers);
    return true;
  } catch {
    return false;
  } finally {
    if (skewS !== 0) vi.useRealTimers();
  }
}

describe("7. Webhooks", () => {
  let receiver: TestServer;
  const deliveries = new Map<string, Delivery>();

  beforeAll(async () => {
    receiver = await startServer("127.0.0.1", (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const headers: Record<string, string> = {};
        for (const name of ["webhook-id", "webhook-timestamp", "webhook-signature"]) headers[name] = String(req.headers[name] ?? "");
        deliveries.set(headers["webhook-id"] ?? "", { headers, body: Buffer.concat(chunks).toString("utf8") });
        res.writeHead(204).end();
      });
    });
  });
  afterAll(async () => receiver?.close());

  /** Runs `count` jobs with a callback through a worker signing with `secrets`; returns their deliveries. */
  async function phase(secrets: string, count: number): Promise<Delivery[]> {
    const w = await startHostileWorker({ CLIPGUARD_WEBHOOK_SECRET: secrets, CLIPGUARD_ALLOWED_HOSTS: "127.0.0.1" });
    try {
      const png = (await solidPng(RED)).toString("base64");
      const out: Delivery[] = [];
      for (let i = 0; i < count; i++) {
        const { jobId } = await w.run({ image: { base64: png }, callbackUrl: `${receiver.origin}/hook` }, { attempts: 1 });
        for (let t = 0; t < 200 && !deliveries.has(jobId); t++) await new Promise((r) => setTimeout(r, 10));
        const d = deliveries.get(jobId);
        if (d === undefined) throw new Error(`no webhook for ${jobId}`);
        out.push(d);
      }
      return out;
    } finally {
      await w.close();
    }
  }

  it("fails tampered, stale, future and wrongly keyed messages; rotation keeps both secrets working", async (ctx) => {
    // rotation: old only, then old and new (comma-separated), then new only
    const before = await phase(OLD, 2);
    const during = await phase(`${OLD}, ${NEW}`, 3);
    const after = await phase(NEW, 2);
    const all = [...before, ...during, ...after];
    const sigCount = (d: Delivery) => d.headers["webhook-signature"]?.split(" ").filter((s) => s.startsWith("v1,")).length ?? 0;

    const count = (ds: Delivery[], check: (d: Delivery) => boolean) => ds.filter(check).length;
    const tamperedBody = (d: Delivery): Delivery => ({ ...d, body: d.body.replace(/"decision":"(\w+)"/, (_m, v: string) => `"decision":"${v === "allow" ? "block" : "allow"}"`) });
    const tamperedId = (d: Delivery): Delivery => ({ ...d, headers: { ...d.headers, "webhook-id": `${d.headers["webhook-id"]}x` } });
    const tamperedTimestamp = (d: Delivery): Delivery => ({ ...d, headers: { ...d.headers, "webhook-timestamp": String(Number(d.headers["webhook-timestamp"]) + 1) } });
    const cases = {
      "old secret verifies before / during / after": [count(before, (d) => verifies(OLD, d)), count(during, (d) => verifies(OLD, d)), count(after, (d) => verifies(OLD, d))],
      "new secret verifies before / during / after": [count(before, (d) => verifies(NEW, d)), count(during, (d) => verifies(NEW, d)), count(after, (d) => verifies(NEW, d))],
      "signatures per message before / during / after": [before, during, after].map((ds) => [...new Set(ds.map(sigCount))].join(",")),
    };
    const failures = {
      "wrong secret": count(all, (d) => verifies(WRONG, d)),
      "tampered body (decision flipped)": count(all, (d) => verifies(OLD, tamperedBody(d)) || verifies(NEW, tamperedBody(d))),
      "tampered webhook-id": count(all, (d) => verifies(OLD, tamperedId(d)) || verifies(NEW, tamperedId(d))),
      "tampered webhook-timestamp (+1 s)": count(all, (d) => verifies(OLD, tamperedTimestamp(d)) || verifies(NEW, tamperedTimestamp(d))),
      [`stale: receiver clock ${TOLERANCE_S + 60} s ahead`]: count(all, (d) => verifies(OLD, d, TOLERANCE_S + 60) || verifies(NEW, d, TOLERANCE_S + 60)),
      [`future: receiver clock ${TOLERANCE_S + 60} s behind`]: count(all, (d) => verifies(OLD, d, -(TOLERANCE_S + 60)) || verifies(NEW, d, -(TOLERANCE_S + 60))),
    };
    // control for the clock cases: inside the tolerance the same messages verify
    const insideTolerance = count(all, (d) => verifies(OLD, d, TOLERANCE_S - 60) || verifies(NEW, d, TOLERANCE_S - 60));

    const figures: Record<string, number | string> = { "webhooks received": all.length };
    for (const [name, v] of Object.entries(cases)) figures[name] = v.join(" / ");
    for (const [name, v] of Object.entries(failures)) figures[`verified despite ${name} (must be 0)`] = v;
    figures[`verified with the receiver clock ${TOLERANCE_S - 60} s ahead (control)`] = `${insideTolerance} of ${all.length}`;
    report(ctx, {
      title: "7. Webhooks",
      method:
        "Three real workers in turn sign with the old secret, with `old, new` (CLIPGUARD_WEBHOOK_SECRET takes a comma- or space-separated list), " +
        "then with the new one; a loopback receiver records each delivery and verifies it with `standardwebhooks` " +
        "(`new Webhook(secret).verify(body, headers)`), as received and altered; clock cases move the receiver's clock (vitest fake Date).",
      criteria:
        "a wrong secret, any change to body, webhook-id or webhook-timestamp, and a timestamp beyond the 5-minute tolerance either way fail " +
        "verification; while both secrets are configured every message carries two signatures and verifies with either secret.",
      summary: { jobsRun: all.length },
      figures,
      notes: ["Added by this scenario: secret rotation. CLIPGUARD_WEBHOOK_SECRET accepts several secrets, and each message is signed with every one of them."],
    });

    expect(all.every((d) => tamperedBody(d).body !== d.body)).toBe(true);
    for (const [name, v] of Object.entries(failures)) expect.soft(v, name).toBe(0);
    expect(insideTolerance).toBe(all.length);
    expect(cases["old secret verifies before / during / after"]).toEqual([before.length, during.length, 0]);
    expect(cases["new secret verifies before / during / after"]).toEqual([0, during.length, after.length]);
    expect(cases["signatures per message before / during / after"]).toEqual(["1", "2", "1"]);
  });
});
