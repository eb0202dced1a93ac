/**
 * Which network addresses the worker may connect to when it fetches a user-supplied URL (an image URL
 * or a callback URL). Pure functions over strings: no DNS, no sockets.
 *
 * The rule: only public unicast addresses, unless the deployment opts in. This mirrors
 * request-filtering-agent (which refuses every ipaddr.js range other than `unicast`) and is at least
 * as strict, so that our own check — which throws a typed error with a clear message — always runs
 * first and the agent stays a second line at connect time.
 */
import { isIP } from "node:net";
import ipaddr from "ipaddr.js";

/** The settings that widen the default "public unicast only" rule. */
export interface AddressPolicy {
  /**
   * Permit loopback, RFC 1918, link-local, CGNAT and unique-local addresses (and their IPv4-mapped
   * IPv6 forms). Unspecified, multicast, broadcast and reserved ranges stay refused.
   * @default false
   */
  readonly allowPrivateAddresses: boolean;
  /**
   * Hostnames (matched exactly, case-insensitively) and IP addresses or CIDRs that bypass the filter.
   * A hostname entry lets that host through whatever it resolves to; an address entry lets that
   * address through whichever hostname led to it.
   * @default []
   */
  readonly allowedHosts: readonly string[];
}

/** The ranges that `allowPrivateAddresses` opens up (ipaddr.js range names). */
const PRIVATE_RANGES: ReadonlySet<string> = new Set([
  "private",
  "loopback",
  "linkLocal",
  "carrierGradeNat",
  "uniqueLocal",
]);

/** Parses a bare IP (no brackets); undefined when it is not one. */
function parseIp(address: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  if (isIP(address) === 0) return undefined;
  try {
    return ipaddr.parse(address);
  } catch {
    return undefined;
  }
}

function matchesAllowedAddress(ip: ipaddr.IPv4 | ipaddr.IPv6, policy: AddressPolicy): boolean {
  // Compare IPv4-mapped IPv6 addresses as the IPv4 address they carry, so "10.0.0.0/8" also covers
  // "::ffff:10.0.0.1". ipaddr's match() throws across families, so compare kinds first.
  const candidate = ip.kind() === "ipv6" && (ip as ipaddr.IPv6).isIPv4MappedAddress()
    ? (ip as ipaddr.IPv6).toIPv4Address()
    : ip;
  for (const entry of policy.allowedHosts) {
    const cidr = parseAddressEntry(entry);
    if (cidr === undefined) continue;
    const [range] = cidr;
    if (range.kind() === candidate.kind() && candidate.match(cidr)) return true;
  }
  return false;
}

/** An allowedHosts entry as a CIDR (a bare IP becomes a /32 or /128); undefined for hostnames. */
function parseAddressEntry(entry: string): [ipaddr.IPv4 | ipaddr.IPv6, number] | undefined {
  const single = parseIp(entry);
  if (single !== undefined) return [single, single.kind() === "ipv4" ? 32 : 128];
  if (!entry.includes("/")) return undefined;
  try {
    return ipaddr.parseCIDR(entry);
  } catch {
    return undefined;
  }
}

/**
 * Why `address` may not be connected to under `policy`, as a short phrase for an error message
 * ("a loopback address"); undefined when it may. Anything that is not a parseable IP is refused.
 */
export function addressRefusal(address: string, policy: AddressPolicy): string | undefined {
  const ip = parseIp(address);
  if (ip === undefined) return "not an IP address";
  if (matchesAllowedAddress(ip, policy)) return undefined;

  const range = ip.range();
  // ipaddr.js calls the deprecated IPv4-compatible block ::a.b.c.d (::/96) "unicast"; such an
  // address is no public host, and a kernel with a `sit` tunnel carries it to a.b.c.d.
  if (ip.kind() === "ipv6" && isIpv4Compatible(ip as ipaddr.IPv6)) return "a deprecated IPv4-compatible IPv6 address";
  if (range === "unicast") return undefined;

  if (ip.kind() === "ipv6" && (ip as ipaddr.IPv6).isIPv4MappedAddress()) {
    // ::ffff:a.b.c.d reaches a.b.c.d over a dual-stack socket: judge it by the IPv4 address, but a
    // mapped form is never needed for a public host, so only the private allowance lets it through.
    const inner = (ip as ipaddr.IPv6).toIPv4Address().range();
    if (policy.allowPrivateAddresses && (inner === "unicast" || PRIVATE_RANGES.has(inner))) return undefined;
    return `an IPv4-mapped ${describeRange(inner)} address`;
  }
  if (policy.allowPrivateAddresses && PRIVATE_RANGES.has(range)) return undefined;
  return `${article(range)} ${describeRange(range)} address`;
}

/** ::a.b.c.d (RFC 4291 §2.5.5.1), other than :: and ::1 which ipaddr.js names unspecified and loopback. */
function isIpv4Compatible(ip: ipaddr.IPv6): boolean {
  const parts = ip.parts;
  return parts.slice(0, 6).every((p) => p === 0) && ((parts[6] ?? 0) !== 0 || (parts[7] ?? 0) > 1);
}

/** True for names that by definition resolve to loopback (RFC 6761), refused without a DNS query. */
export function isLocalhostName(hostname: string): boolean {
  const name = hostname.toLowerCase().replace(/\.$/, "");
  return name === "localhost" || name.endsWith(".localhost");
}

/** True when `hostname` is listed by name in allowedHosts, which lets it bypass the address checks. */
export function isAllowedHostname(hostname: string, policy: AddressPolicy): boolean {
  const name = hostname.toLowerCase().replace(/\.$/, "");
  return policy.allowedHosts.some(
    (entry) => parseAddressEntry(entry) === undefined && entry.toLowerCase().replace(/\.$/, "") === name,
  );
}

/**
 * The exact addresses among `addresses` that pass only because of an allowedHosts address entry;
 * request-filtering-agent needs to be told about them, or it would refuse them at connect time.
 */
export function allowlistedAddresses(addresses: readonly string[], policy: AddressPolicy): string[] {
  return addresses.filter((address) => {
    const ip = parseIp(address);
    return ip !== undefined && matchesAllowedAddress(ip, policy);
  });
}

function describeRange(range: string): string {
  switch (range) {
    case "private":
      return "private (RFC 1918)";
    case "loopback":
      return "loopback";
    case "linkLocal":
      return "link-local";
    case "carrierGradeNat":
      return "carrier-grade NAT";
    case "uniqueLocal":
      return "unique-local";
    case "unspecified":
      return "unspecified";
    case "multicast":
      return "multicast";
    case "broadcast":
      return "broadcast";
    default:
      // reserved, documentation, benchmarking, 6to4, teredo, NAT64 …: none is a public host
      return "reserved";
  }
}

function article(range: string): string {
  return range === "unspecified" ? "an" : "a";
}
