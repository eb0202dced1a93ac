/**
 * 6. SSRF: URL forms that try to make a worker call loopback, private, link-local and metadata
 * addresses, as image URLs and as callback URLs, through one real worker. Canary HTTP servers on
 * 127.0.0.1 and ::1 count every connection; an injected resolver (a preload module, see
 * support/hostile-net.ts) makes names resolve into refused ranges without any real DNS, and logs
 * every TCP dial the worker makes, so a form aimed where nothing listens is caught too.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { solidPng, BLUE, tempDir } from "../test/support/fixtures.js";
import { report } from "./support/figures.js";
import { readDials, resolverPreloadEnv, startServer, type Dial, type TestServer } from "./support/hostile-net.js";
import { SSRF_ALLOWED_HOSTS, SSRF_RESOLVER, ssrfForms, type SsrfForm } from "./support/hostile-ssrf-forms.js";
import { startHostileWorker, type HostileWorker } from "./support/hostile-worker.js";

const SECRET = `whsec_${Buffer.from("chaos ssrf webhook secret 32 byte").toString("base64")}`;

interface FormResult {
  form: SsrfForm;
  imageCode: string;
  callbackCode: string;
  /** Canary connections and unexpected dials while this form's two jobs ran. */
  canaryHits: number;
  strayDials: Dial[];
}

describe("6. SSRF", () => {
  let w: HostileWorker;
  let canary4: TestServer;
  let canary6: TestServer;
  let standIn: TestServer;
  let dialLog: string;

  beforeAll(async () => {
    canary4 = await startServer("127.0.0.1");
    canary6 = await startServer("::1");
    // the stand-in for a public host: redirects where it is told to, serves /ok.png, takes POST /hook
    const okPng = await solidPng(BLUE);
    standIn = await startServer("127.0.0.2", (req, res) => {
      const to = new URL(req.url ?? "/", "http://x").searchParams.get("to");
      if (req.url?.startsWith("/r?") && to !== null) res.writeHead(302, { location: to }).end();
      else if (req.url === "/ok.png") res.writeHead(200, { "content-type": "image/png" }).end(okPng);
      else if (req.url === "/hook" && req.method === "POST") res.writeHead(204).end();
      else res.writeHead(404).end();
    });
    const preload = await resolverPreloadEnv(await tempDir("clipguard-chaos-ssrf-"), SSRF_RESOLVER);
    dialLog = preload.dialLog;
    w = await startHostileWorker({
      ...preload.env,
      CLIPGUARD_ALLOWED_HOSTS: SSRF_ALLOWED_HOSTS,
      CLIPGUARD_FETCH_TIMEOUT_MS: "2000",
      CLIPGUARD_WEBHOOK_SECRET: SECRET,
      CLIPGUARD_WEBHOOK_TIMEOUT_MS: "2000",
      CLIPGUARD_WEBHOOK_ATTEMPTS: "1",
    });
  });

  afterAll(async () => {
    await w?.close();
    await Promise.all([canary4?.close(), canary6?.close(), standIn?.close()]);
  });

  /** Dials the worker may make: its Redis, and the stand-in. */
  const allowedDial = (d: Dial) => (d.host === "127.0.0.1" && d.port === w.redisServer.port) || (d.host === "127.0.0.2" && d.port === standIn.port);
  const canaryConnections = () => canary4.connections + canary6.connections;

  /** "delivered" when the job completed; else the code of the webhook failure the worker logged. */
  const callbackCode = async (jobId: string): Promise<string> => {
    const state = await (await w.queue.getJob(jobId))?.getState();
    if (state === "completed") return "delivered";
    for (let i = 0; i < 100; i++) {
      const entry = w.worker.logs.find((l) => l["jobId"] === jobId && l["msg"] === "publishing the verdict failed");
      if (entry !== undefined) return (entry["err"] as { code?: string } | undefined)?.code ?? "uncoded";
      await new Promise((r) => setTimeout(r, 20));
    }
    return `no log line (job ${state ?? "gone"})`;
  };

  it("refuses every form, as image URL and as callback URL, with no connection to any canary", async (ctx) => {
    const forms = ssrfForms({ v4: canary4.port, v6: canary6.port, pub: standIn.port });
    const png = (await solidPng(BLUE)).toString("base64");
    const results: FormResult[] = [];
    for (const form of forms) {
      const dialsBefore = (await readDials(dialLog)).length;
      const hitsBefore = canaryConnections();
      const asImage = await w.run({ image: { url: form.url } }, { attempts: 1 });
      const asCallback = await w.run({ image: { base64: png }, callbackUrl: form.url }, { attempts: 1 });
      results.push({
        form,
        imageCode: asImage.verdict.error?.code ?? `verdict ${asImage.verdict.decision}`,
        callbackCode: await callbackCode(asCallback.jobId),
        canaryHits: canaryConnections() - hitsBefore,
        strayDials: (await readDials(dialLog)).slice(dialsBefore).filter((d) => !allowedDial(d)),
      });
    }
    // a refused callback fails the job: is it retried? (job attempts 3, 100 ms apart)
    const probe = await w.run({ image: { base64: png }, callbackUrl: `http://127.0.0.1:${canary4.port}/hook` }, { attempts: 3, backoff: { type: "fixed", delay: 100 } });
    const probeJob = await w.queue.getJob(probe.jobId);
    for (let i = 0; i < 100 && (await probeJob?.getState()) !== "failed"; i++) await new Promise((r) => setTimeout(r, 50));
    const probeAttempts = (await w.queue.getJob(probe.jobId))?.attemptsMade ?? -1;

    // positive control: the same worker does fetch from and deliver to the allowed host
    const control = await w.run({ image: { url: `http://public.test:${standIn.port}/ok.png` }, callbackUrl: `http://public.test:${standIn.port}/hook` }, { attempts: 1 });
    const controlDelivered = (await callbackCode(control.jobId)) === "delivered" && standIn.paths.includes("/hook");

    const allDials = await readDials(dialLog);
    const groups = [...new Set(forms.map((f) => f.group))];
    const figures: Record<string, number | string> = {
      "URL forms": forms.length,
      "jobs (each form as image URL and as callback URL)": forms.length * 2,
      "canary connections (127.0.0.1 and ::1)": canaryConnections(),
      "worker dials logged in all (Redis, the stand-in, anything else)": allDials.length,
      "worker dials other than Redis and the stand-in": allDials.filter((d) => !allowedDial(d)).length,
      "image URLs refused (CLIPGUARD_E_URL_REFUSED)": results.filter((r) => r.imageCode === "CLIPGUARD_E_URL_REFUSED").length,
      "callback URLs refused (CLIPGUARD_E_URL_REFUSED)": results.filter((r) => r.callbackCode === "CLIPGUARD_E_URL_REFUSED").length,
      "attempts of a job whose callback URL is refused (job attempts: 3)": probeAttempts,
      "control: image from and webhook to the allowed host": `${control.verdict.decision}, webhook ${controlDelivered ? "delivered" : "not delivered"}`,
    };
    for (const g of groups) figures[`forms: ${g}`] = forms.filter((f) => f.group === g).length;
    for (const r of results.filter((x) => x.imageCode !== "CLIPGUARD_E_URL_REFUSED" || x.callbackCode !== "CLIPGUARD_E_URL_REFUSED")) {
      figures[`not refused outright: ${r.form.name}`] = `image ${r.imageCode}, callback ${r.callbackCode}`;
    }
    report(ctx, {
      title: "6. SSRF",
      method:
        `${forms.length} URL forms (${groups.join(", ")}) through one real worker, each as an image URL and as a callbackUrl ` +
        "(CLIPGUARD_WEBHOOK_SECRET set). Canary HTTP servers on 127.0.0.1 and ::1 count accepted connections; a preload module injects a " +
        `resolver (a table: names resolving to loopback, RFC 1918, CGNAT, link-local, ULA, NAT64 and IPv4-compatible addresses, a rebinding name; ` +
        `no real DNS) and logs every TCP dial. A stand-in "public" host (public.test → 127.0.0.2, allowed by CLIPGUARD_ALLOWED_HOSTS=${SSRF_ALLOWED_HOSTS}) redirects into the refused ranges.`,
      criteria: "zero connections accepted by any canary and zero dials other than Redis and the stand-in, for image URLs and for callback URLs; every image-URL form except DNS rebinding fails with CLIPGUARD_E_URL_REFUSED.",
      summary: { ssrfForms: forms.length, jobsRun: forms.length * 2 + 2 },
      figures,
      notes: [
        "Fixed by this scenario: IPv4-compatible IPv6 addresses (::a.b.c.d, e.g. [::127.0.0.1]) passed the address policy, which took ipaddr.js's \"unicast\" for them; the worker dialled them (EHOSTUNREACH here, or a sit tunnel to a.b.c.d). They are refused now.",
        "DNS rebinding is defeated by pinning: the name is resolved once, checked, and the socket dials exactly the checked address (here the allowed stand-in, which answers 404).",
        "Redirects are not followed for callback URLs, so redirect forms as callbacks end in CLIPGUARD_E_WEBHOOK (the stand-in's 302) without a second request.",
      ],
    });

    expect(canaryConnections()).toBe(0);
    expect(allDials.filter((d) => !allowedDial(d))).toEqual([]);
    for (const r of results) {
      expect.soft(r.canaryHits, r.form.name).toBe(0);
      expect.soft(r.strayDials, r.form.name).toEqual([]);
      if (r.form.name.startsWith("name rebinding")) continue;
      expect.soft(r.imageCode, r.form.name).toBe("CLIPGUARD_E_URL_REFUSED");
      // callbacks do not follow redirects: the stand-in's 302 is a failed delivery
      expect.soft(r.callbackCode, r.form.name).toBe(r.form.group === "redirect" ? "CLIPGUARD_E_WEBHOOK" : "CLIPGUARD_E_URL_REFUSED");
    }
    expect(forms.length).toBeGreaterThanOrEqual(40);
    expect(control.verdict.decision).not.toBe("error");
    expect(controlDelivered).toBe(true);
    // the dial log is live: it saw the control's connections to the stand-in
    expect(allDials.some((d) => d.host === "127.0.0.2" && d.port === standIn.port)).toBe(true);
  });
});
