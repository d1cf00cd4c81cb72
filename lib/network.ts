/** Security group rules, from the host's one port list (lib/ports.ts). */
import { PortSpec } from "./ports";

export interface IngressRule {
  protocol: "tcp" | "udp";
  fromPort: number;
  toPort: number;
  cidrBlocks: string[];
  ipv6CidrBlocks: string[];
  description: string;
}

function split(cidrs: string[]): { cidrBlocks: string[]; ipv6CidrBlocks: string[] } {
  return { cidrBlocks: cidrs.filter((c) => !c.includes(":")), ipv6CidrBlocks: cidrs.filter((c) => c.includes(":")) };
}

export function sshIngress(cidrs: string[]): IngressRule {
  return { protocol: "tcp", fromPort: 22, toPort: 22, ...split(cidrs), description: "SSH (Pulumi and admins)" };
}

/** Inbound rules for a host's ports; `selfAddress` is its public address (the TURN relay's hairpin). */
export function hostIngress(ports: PortSpec[], clientCidrs: string[], selfAddress: string): IngressRule[] {
  const who = { clients: clientCidrs, everyone: ["0.0.0.0/0", "::/0"], self: [`${selfAddress}/32`], loopback: [] as string[] };
  return ports
    .filter((p) => p.exposure !== "loopback")
    .map((p) => ({ protocol: p.protocol, fromPort: p.from, toPort: p.to, ...split(who[p.exposure]), description: p.purpose }));
}

/** Builders and hosts fetch from Nix caches, package mirrors and the registry. */
export const ALL_EGRESS = [
  { protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"], ipv6CidrBlocks: ["::/0"], description: "outbound" },
];
