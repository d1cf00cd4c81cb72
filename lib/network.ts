/** Security group rules, from the same port list the container publishes. */
import { PortSpec } from "./neko";

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

export function nekoIngress(ports: PortSpec[], clientCidrs: string[]): IngressRule[] {
  return ports.map((p) => ({ protocol: p.protocol, fromPort: p.from, toPort: p.to, ...split(clientCidrs), description: p.purpose }));
}

/** Builders and hosts fetch from Nix caches, package mirrors and the registry. */
export const ALL_EGRESS = [
  { protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"], ipv6CidrBlocks: ["::/0"], description: "outbound" },
];
