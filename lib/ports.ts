/**
 * Every port a neko host listens on, from one place: the security group, the published container
 * ports and neko's own settings are all derived from this list, so they cannot disagree.
 */
import { NekoSettings } from "./settings";

export type Protocol = "tcp" | "udp";

/**
 * Who may reach a port: the client networks, everyone (ACME's HTTP challenge comes from anywhere),
 * the host itself through its public address (a TURN relay on the host sends media to neko's
 * public address), or this machine only (neko behind the TLS front).
 */
export type Exposure = "clients" | "everyone" | "self" | "loopback";

export interface PortSpec {
  from: number;
  to: number;
  protocol: Protocol;
  purpose: string;
  exposure: Exposure;
  /** Which container listens: neko itself, the TLS front (Caddy) or the TURN relay (coturn). */
  service: "neko" | "tls" | "turn";
}

/** The HTTPS front's ports: fixed, since ACME validates on 80 and browsers expect 443. */
export const HTTP_PORT = 80;
export const HTTPS_PORT = 443;

export function hostPorts(n: NekoSettings, opts: { tls: boolean }): PortSpec[] {
  const ports: PortSpec[] = [
    {
      from: n.httpPort,
      to: n.httpPort,
      protocol: "tcp",
      purpose: "neko HTTP and WebSocket",
      exposure: opts.tls ? "loopback" : "clients",
      service: "neko",
    },
  ];
  const media = (from: number, to: number, protocol: Protocol, purpose: string) => {
    ports.push({ from, to, protocol, purpose, exposure: "clients", service: "neko" });
    // Media relayed by the TURN relay on this host reaches neko through the host's public address.
    if (n.turn.enabled) ports.push({ from, to, protocol, purpose: `${purpose}, from the TURN relay`, exposure: "self", service: "neko" });
  };
  if (n.webrtc.mode === "epr") {
    media(n.portRange.low, n.portRange.high, "udp", "WebRTC media (EPR)");
  } else {
    media(n.webrtc.udpMux, n.webrtc.udpMux, "udp", "WebRTC media (UDP mux)");
    if (n.webrtc.tcpMux !== undefined) media(n.webrtc.tcpMux, n.webrtc.tcpMux, "tcp", "WebRTC media (TCP mux)");
  }
  if (opts.tls) {
    ports.push({
      from: HTTP_PORT,
      to: HTTP_PORT,
      protocol: "tcp",
      purpose: "ACME HTTP challenge and redirect to HTTPS",
      exposure: "everyone",
      service: "tls",
    });
    ports.push({ from: HTTPS_PORT, to: HTTPS_PORT, protocol: "tcp", purpose: "neko over HTTPS", exposure: "clients", service: "tls" });
  }
  if (n.turn.enabled) {
    const t = n.turn;
    for (const protocol of ["udp", "tcp"] as const) {
      ports.push({
        from: t.port,
        to: t.port,
        protocol,
        purpose: `TURN over ${protocol.toUpperCase()}`,
        exposure: "clients",
        service: "turn",
      });
    }
    if (opts.tls)
      ports.push({ from: t.tlsPort, to: t.tlsPort, protocol: "tcp", purpose: "TURN over TLS", exposure: "clients", service: "turn" });
    ports.push({
      from: t.relayPorts.low,
      to: t.relayPorts.high,
      protocol: "udp",
      purpose: "TURN relay",
      exposure: "self",
      service: "turn",
    });
  }
  return ports;
}

/** `docker run --publish` values for neko's own ports, 1:1 (remapping breaks ICE). */
export function publishArgs(ports: PortSpec[], bindAddress = ""): string[] {
  return ports
    .filter((p) => p.service === "neko" && p.exposure !== "self")
    .map((p) => {
      const range = p.from === p.to ? `${p.from}` : `${p.from}-${p.to}`;
      const bind = p.exposure === "loopback" ? "127.0.0.1:" : bindAddress ? `${bindAddress}:` : "";
      return `${bind}${range}:${range}/${p.protocol}`;
    });
}
