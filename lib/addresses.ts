/** IP addresses and networks, parsed by hand: CIDR syntax, private and documentation ranges. */

/** IPv4 address as a 32-bit number, or undefined. */
function ipv4(addr: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(addr);
  if (!m) return undefined;
  const octets = m.slice(1).map(Number);
  if (octets.some((o) => o > 255)) return undefined;
  return octets.reduce((acc, o) => acc * 256 + o, 0);
}

/** IPv6 address as eight 16-bit groups, or undefined. */
function ipv6(addr: string): number[] | undefined {
  const halves = addr.split("::");
  if (halves.length > 2) return undefined;
  const parse = (h: string) => (h === "" ? [] : h.split(":"));
  const [head, tail] = [parse(halves[0]), halves.length === 2 ? parse(halves[1]) : []];
  if (![...head, ...tail].every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  return [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...tail].map((g) => parseInt(g, 16));
}

export function isIpAddress(value: string): boolean {
  return ipv4(value) !== undefined || ipv6(value) !== undefined;
}

export function isCidr(value: string): boolean {
  const m = /^(.+)\/(\d{1,3})$/.exec(value);
  if (!m) return false;
  const bits = Number(m[2]);
  if (ipv4(m[1]) !== undefined) return bits <= 32;
  if (ipv6(m[1]) !== undefined) return bits <= 128;
  return false;
}

interface Net4 {
  base: number;
  bits: number;
}

function inV4(addr: number, net: Net4): boolean {
  const size = 2 ** (32 - net.bits);
  return Math.floor(addr / size) === Math.floor(net.base / size);
}

const v4 = (a: string, bits: number): Net4 => ({ base: ipv4(a)!, bits });

const DOC_V4: [string, Net4][] = [
  ["192.0.2.0/24", v4("192.0.2.0", 24)],
  ["198.51.100.0/24", v4("198.51.100.0", 24)],
  ["203.0.113.0/24", v4("203.0.113.0", 24)],
];

/** The documentation range (RFC 5737, RFC 3849) a network lies in, or undefined. */
export function documentationRange(cidr: string): string | undefined {
  if (!isCidr(cidr)) return undefined;
  const [addr, bitsText] = cidr.split("/");
  const bits = Number(bitsText);
  const a4 = ipv4(addr);
  if (a4 !== undefined) return DOC_V4.find(([, net]) => bits >= net.bits && inV4(a4, net))?.[0];
  const groups = ipv6(addr)!;
  return bits >= 32 && groups[0] === 0x2001 && groups[1] === 0x0db8 ? "2001:db8::/32" : undefined;
}

const PRIVATE_V4 = [
  v4("10.0.0.0", 8),
  v4("172.16.0.0", 12),
  v4("192.168.0.0", 16),
  v4("127.0.0.0", 8),
  v4("169.254.0.0", 16),
  v4("100.64.0.0", 10),
];

/** Loopback, private (RFC 1918, ULA), link-local or carrier-grade NAT: not reachable from the internet. */
export function isPrivateAddress(addr: string): boolean {
  const a4 = ipv4(addr);
  if (a4 !== undefined) return PRIVATE_V4.some((net) => inV4(a4, net));
  const g = ipv6(addr);
  if (!g) return false;
  const loopback = g.slice(0, 7).every((x) => x === 0) && g[7] === 1;
  return loopback || (g[0] & 0xfe00) === 0xfc00 || (g[0] & 0xffc0) === 0xfe80;
}

export interface LookedUp {
  address: string;
  family: number;
}
export type Lookup = (name: string, opts: { all: true }) => Promise<LookedUp[]>;

/**
 * The IP address clients reach for `value` (an address, or a name resolved on this machine):
 * NEKO_WEBRTC_NAT1TO1 takes IP addresses only (pion rejects names), so a name is resolved at
 * deploy; when it resolves differently, the rollout's input changes and neko is rolled out again.
 * IPv4 first, as browsers on IPv4-only networks need it. `setting` names the key the value came
 * from, `fixKey` the key that takes an address instead.
 */
export async function publicIp(value: string, setting: string, lookup: Lookup, fixKey = setting): Promise<string> {
  if (isIpAddress(value)) return value;
  let found: LookedUp[] = [];
  let why = "no address";
  try {
    found = await lookup(value, { all: true });
  } catch (e) {
    why = (e as { code?: string }).code ?? String(e);
  }
  const pick = found.find((a) => a.family === 4) ?? found.find((a) => a.family === 6);
  if (!pick) {
    throw new Error(
      `neko-infra:${setting}: ${value} does not resolve on this machine (${why}); WebRTC needs the IP address clients reach (NEKO_WEBRTC_NAT1TO1 takes addresses only): fix the name's DNS record, or give the address: pulumi config set --path '${fixKey}' <ip>`,
    );
  }
  return pick.address;
}
