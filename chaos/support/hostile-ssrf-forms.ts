/**
 * URL forms that try to reach addresses a worker must never call (loopback, private, link-local,
 * metadata, …), for the SSRF scenario. Every form targets a loopback canary's port where one can
 * listen, so a form that got through would be counted; the rest are caught by the worker's dial log.
 * test/worker-security.test.ts covers 19 of these through the regular suite.
 */
import type { ResolverTable } from "./hostile-net.js";

export interface SsrfPorts {
  /** Canary on 127.0.0.1. */
  v4: number;
  /** Canary on ::1. */
  v6: number;
  /** The allowed stand-in for a public host ("public.test" → 127.0.0.2), which redirects. */
  pub: number;
}

export interface SsrfForm {
  group: "literal" | "encoding" | "resolver" | "redirect" | "userinfo" | "scheme";
  name: string;
  url: string;
}

/** What the injected resolver answers: names that resolve into refused ranges, and the stand-in. */
export const SSRF_RESOLVER: ResolverTable = {
  answers: {
    "public.test": ["127.0.0.2"],
    "internal.test": ["127.0.0.1"],
    "v6loop.test": ["::1"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "compat.test": ["::7f00:1"],
    "nat64.test": ["64:ff9b::a9fe:a9fe"],
    "metadata.test": ["169.254.169.254"],
    "rfc1918.test": ["10.1.2.3"],
    "corp.test": ["172.20.0.5"],
    "home.test": ["192.168.1.1"],
    "cgnat.test": ["100.64.1.1"],
    "ula.test": ["fd00::1"],
    "zero.test": ["0.0.0.0"],
    // one allowed address and one loopback: the whole name is refused
    "mixed.test": ["127.0.0.2", "127.0.0.1"],
  },
  // DNS rebinding: allowed on the first lookup, loopback after it
  rotating: { "rebind.test": ["127.0.0.2", "127.0.0.1"] },
};

/** Hosts the scenario's worker may reach: the stand-in by name and by address. */
export const SSRF_ALLOWED_HOSTS = "public.test,127.0.0.2";

export function ssrfForms({ v4, v6, pub }: SsrfPorts): SsrfForm[] {
  const literal = (name: string, host: string, port: number | null = v4): SsrfForm => ({
    group: "literal",
    name,
    url: `http://${host}${port === null ? "" : `:${port}`}/x.png`,
  });
  const encoding = (name: string, url: string): SsrfForm => ({ group: "encoding", name, url });
  const resolver = (name: string, host: string, port = v4): SsrfForm => ({ group: "resolver", name, url: `http://${host}:${port}/x.png` });
  const redirect = (name: string, target: string): SsrfForm => ({
    group: "redirect",
    name,
    url: `http://public.test:${pub}/r?to=${encodeURIComponent(target)}`,
  });
  return [
    literal("loopback 127.0.0.1", "127.0.0.1"),
    literal("localhost", "localhost"),
    literal("localhost with a trailing dot", "localhost."),
    literal("LOCALHOST in capitals", "LOCALHOST"),
    literal("a *.localhost name", "canary.localhost"),
    literal("another 127/8 address", "127.255.255.254"),
    literal("unspecified 0.0.0.0", "0.0.0.0"),
    literal("0 (short for 0.0.0.0)", "0"),
    literal("IPv6 loopback [::1]", "[::1]", v6),
    literal("IPv6 loopback in full", "[0:0:0:0:0:0:0:1]", v6),
    literal("IPv6 unspecified [::]", "[::]", v6),
    literal("IPv4-mapped [::ffff:127.0.0.1]", "[::ffff:127.0.0.1]"),
    literal("IPv4-mapped in hex [::ffff:7f00:1]", "[::ffff:7f00:1]"),
    literal("IPv4-mapped in full", "[0:0:0:0:0:ffff:127.0.0.1]"),
    literal("IPv4-compatible [::127.0.0.1]", "[::127.0.0.1]"),
    literal("IPv4-translated (SIIT) [::ffff:0:7f00:1]", "[::ffff:0:7f00:1]"),
    literal("NAT64 [64:ff9b::127.0.0.1]", "[64:ff9b::7f00:1]"),
    literal("local NAT64 [64:ff9b:1::127.0.0.1]", "[64:ff9b:1::7f00:1]"),
    literal("6to4 of 127.0.0.1 [2002:7f00:1::1]", "[2002:7f00:1::1]"),
    literal("link-local IPv6 [fe80::1]", "[fe80::1]"),
    literal("unique-local fd00::/8", "[fd00::1]"),
    literal("unique-local fc00::/8", "[fc00::1]"),
    literal("cloud metadata 169.254.169.254", "169.254.169.254", null),
    literal("cloud metadata over IPv6 [fd00:ec2::254]", "[fd00:ec2::254]", null),
    literal("RFC 1918 10/8", "10.0.0.1"),
    literal("RFC 1918 172.16/12 (low)", "172.16.0.1"),
    literal("RFC 1918 172.16/12 (high)", "172.31.255.254"),
    literal("RFC 1918 192.168/16", "192.168.0.1"),
    literal("CGNAT 100.64/10 (low)", "100.64.0.1"),
    literal("CGNAT 100.64/10 (high)", "100.127.255.254"),
    literal("benchmarking 198.18/15", "198.18.0.1"),
    literal("multicast 224.0.0.1", "224.0.0.1"),
    literal("broadcast 255.255.255.255", "255.255.255.255"),
    encoding("decimal 2130706433", `http://2130706433:${v4}/x.png`),
    encoding("hex 0x7f000001", `http://0x7f000001:${v4}/x.png`),
    encoding("dotted hex 0x7f.0x0.0x0.0x1", `http://0x7f.0x0.0x0.0x1:${v4}/x.png`),
    encoding("octal 0177.0.0.1", `http://0177.0.0.1:${v4}/x.png`),
    encoding("octal whole 017700000001", `http://017700000001:${v4}/x.png`),
    encoding("short 127.1", `http://127.1:${v4}/x.png`),
    encoding("short 127.0.1", `http://127.0.1:${v4}/x.png`),
    encoding("zero-padded 127.000.000.001", `http://127.000.000.001:${v4}/x.png`),
    encoding("percent-encoded host %31%32%37.0.0.1", `http://%31%32%37.0.0.1:${v4}/x.png`),
    encoding("ideographic full stops 127。0。0。1", `http://127。0。0。1:${v4}/x.png`),
    encoding("enclosed digits ①②⑦.0.0.1", `http://①②⑦.0.0.1:${v4}/x.png`),
    encoding("backslashes http:\\\\127.0.0.1", `http:\\\\127.0.0.1:${v4}\\x.png`),
    encoding("missing slashes http:127.0.0.1", `http:127.0.0.1:${v4}/x.png`),
    resolver("name → 127.0.0.1", "internal.test"),
    resolver("name → ::1", "v6loop.test", v6),
    resolver("name → ::ffff:127.0.0.1", "mapped.test"),
    resolver("name → ::7f00:1 (IPv4-compatible)", "compat.test"),
    resolver("name → NAT64 of 169.254.169.254", "nat64.test"),
    resolver("name → 169.254.169.254", "metadata.test"),
    resolver("name → 10.1.2.3", "rfc1918.test"),
    resolver("name → 172.20.0.5", "corp.test"),
    resolver("name → 192.168.1.1", "home.test"),
    resolver("name → 100.64.1.1", "cgnat.test"),
    resolver("name → fd00::1", "ula.test"),
    resolver("name → 0.0.0.0", "zero.test"),
    resolver("name → an allowed and a loopback address", "mixed.test"),
    resolver("name rebinding: allowed, then loopback", "rebind.test", pub),
    redirect("redirect → 127.0.0.1", `http://127.0.0.1:${v4}/x.png`),
    redirect("redirect → [::1]", `http://[::1]:${v6}/x.png`),
    redirect("redirect → 2130706433", `http://2130706433:${v4}/x.png`),
    redirect("redirect → localhost", `http://localhost:${v4}/x.png`),
    redirect("redirect → name → 127.0.0.1", `http://internal.test:${v4}/x.png`),
    redirect("redirect → 169.254.169.254", "http://169.254.169.254/latest/meta-data/"),
    redirect("redirect → [::ffff:127.0.0.1]", `http://[::ffff:127.0.0.1]:${v4}/x.png`),
    redirect("redirect → protocol-relative //127.0.0.1", `//127.0.0.1:${v4}/x.png`),
    redirect("redirect → file:///etc/passwd", "file:///etc/passwd"),
    redirect("redirect → gopher://127.0.0.1", `gopher://127.0.0.1:${v4}/_GET%20/`),
    redirect("redirect → userinfo public.test@127.0.0.1", `http://public.test@127.0.0.1:${v4}/x.png`),
    redirect("two redirects → 127.0.0.1", `http://public.test:${pub}/r?to=${encodeURIComponent(`http://127.0.0.1:${v4}/x.png`)}`),
    { group: "userinfo", name: "example.com@127.0.0.1", url: `http://example.com@127.0.0.1:${v4}/x.png` },
    { group: "userinfo", name: "user:pass@ an allowed host", url: `http://user:pass@public.test:${pub}/x.png` },
    { group: "userinfo", name: "fragment 127.0.0.1#@example.com", url: `http://127.0.0.1:${v4}#@example.com/x.png` },
    { group: "userinfo", name: "backslash 127.0.0.1\\@example.com", url: `http://127.0.0.1:${v4}\\@example.com/x.png` },
    { group: "userinfo", name: "127.0.0.1:port@public.test (host is public.test)", url: `http://127.0.0.1:${v4}@public.test:${pub}/x.png` },
    { group: "userinfo", name: "percent-encoded @ public.test%40127.0.0.1", url: `http://public.test%40127.0.0.1:${v4}/x.png` },
    { group: "scheme", name: "file:///etc/passwd", url: "file:///etc/passwd" },
    { group: "scheme", name: "gopher://127.0.0.1", url: `gopher://127.0.0.1:${v4}/_GET%20/` },
    { group: "scheme", name: "ftp://127.0.0.1", url: `ftp://127.0.0.1:${v4}/x.png` },
    { group: "scheme", name: "data: URL", url: "data:image/png;base64,iVBORw0KGgo=" },
    { group: "scheme", name: "dict://127.0.0.1", url: `dict://127.0.0.1:${v4}/info` },
    { group: "scheme", name: "ws://127.0.0.1", url: `ws://127.0.0.1:${v4}/` },
  ];
}
