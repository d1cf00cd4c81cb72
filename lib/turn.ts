/**
 * The TURN relay's configuration (coturn) and the ICE servers neko hands to browsers. One user with
 * a generated password (long-term credentials); relaying into private networks is refused, except
 * to the host's own public address, where neko listens.
 *
 * Shaped by what coturn 4.6.1 did (notes/tls-turn-experiment.md): peer ranges are written `a-b`
 * (CIDR is rejected with "Wrong address format" and the rule is dropped while the server keeps
 * running); `allowed-peer-ip` wins over `denied-peer-ip` for its address; certificates are read at
 * start and on SIGUSR2 only.
 */
import { certificatePaths } from "./caddy";
import { IceServer, stateRemoveCommand } from "./neko";
import { TurnSettings } from "./settings";

/** coturn 4.6 on Alpine, from GitHub's registry (coturn publishes there, not on ECR Public). */
export const TURN_IMAGE = "ghcr.io/coturn/coturn:4.6-alpine";
export const TURN_USER = "neko";
/** Where the relay's container sees the TLS front's data directory (read-only). */
export const TURN_TLS_DIR = "/tls";
/**
 * Where the relay's entrypoint (scripts/turn-relay.sh, as root) copies the front's certificate and
 * key for turnserver, which drops to nobody after start-up: Caddy keeps its keys 0600 in 0700
 * directories, and the periodic reload (SIGUSR2) runs as nobody.
 */
export const TURN_CERT_DIR = "/run/neko-turn";
/** The unprivileged user and group turnserver drops to (both exist in the official image). */
export const TURN_PROC_USER = "nobody";
export const TURN_PROC_GROUP = "nogroup";
/** nobody's uid (the official image's and the stand-in's /etc/passwd): what the host's metadata guard rejects. */
export const TURN_PROC_UID = 65534;

/** Not reachable from the internet, or not meant to be relayed to: coturn's `a-b` range syntax. */
export const DENIED_PEER_RANGES = [
  "0.0.0.0-0.255.255.255",
  "10.0.0.0-10.255.255.255",
  "100.64.0.0-100.127.255.255",
  "127.0.0.0-127.255.255.255",
  "169.254.0.0-169.254.255.255",
  "172.16.0.0-172.31.255.255",
  "192.0.0.0-192.0.0.255",
  "192.168.0.0-192.168.255.255",
  "198.18.0.0-198.19.255.255",
  "240.0.0.0-255.255.255.255",
  "::1",
  "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
  "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

export interface TurnTls {
  /** The front's certificate subject (its domain, or the host's IP address). */
  subject: string;
  acmeServer: string;
}

export interface TurnConfOptions {
  turn: TurnSettings;
  /** The host's public address: advertised for relays, and the one private-looking peer allowed. */
  publicAddress: string;
  password: string;
  /** TURN over TLS with the front's certificate for `subject`. */
  tls?: TurnTls;
}

export function turnserverConf(o: TurnConfOptions): string {
  const lines = [
    `listening-port=${o.turn.port}`,
    ...(o.tls ? [`tls-listening-port=${o.turn.tlsPort}`] : []),
    `min-port=${o.turn.relayPorts.low}`,
    `max-port=${o.turn.relayPorts.high}`,
    `external-ip=${o.publicAddress}`,
    "realm=neko",
    "fingerprint",
    "lt-cred-mech",
    `user=${TURN_USER}:${o.password}`,
    "no-multicast-peers",
    ...DENIED_PEER_RANGES.map((r) => `denied-peer-ip=${r}`),
    `allowed-peer-ip=${o.publicAddress}`,
    // Browsers relay over UDP; no TCP connections to peers, no STUN NAT-behaviour discovery.
    "no-tcp-relay",
    "no-rfc5780",
    "no-stun-backward-compatibility",
    "no-cli",
    "no-software-attribute",
    `proc-user=${TURN_PROC_USER}`,
    `proc-group=${TURN_PROC_GROUP}`,
    "log-file=stdout",
    "simple-log",
  ];
  if (o.tls) {
    // TLS over TCP only (`turns:`); browsers do not use TURN over DTLS.
    lines.push(`cert=${TURN_CERT_DIR}/cert.pem`, `pkey=${TURN_CERT_DIR}/key.pem`, "no-tlsv1", "no-tlsv1_1", "no-dtls");
  } else {
    lines.push("no-tls", "no-dtls");
  }
  return `${lines.join("\n")}\n`;
}

/** The front's certificate and key as the relay's container sees them (under TURN_TLS_DIR). */
export function turnTlsFiles(tls: TurnTls): { cert: string; key: string } {
  const { cert, key } = certificatePaths(tls.acmeServer, tls.subject);
  return { cert: `${TURN_TLS_DIR}/${cert}`, key: `${TURN_TLS_DIR}/${key}` };
}

/** scripts/turn-relay.sh's environment (TURN_CONF holds the password: a secret). */
export function turnRelayEnv(o: TurnConfOptions): Record<string, string> {
  const files = o.tls ? turnTlsFiles(o.tls) : undefined;
  return {
    TURN_CONF: turnserverConf(o),
    ...(files ? { TURN_TLS_CERT: files.cert, TURN_TLS_KEY: files.key } : {}),
  };
}

function hostPart(address: string): string {
  return address.includes(":") ? `[${address}]` : address;
}

export function iceServers(o: {
  turn: TurnSettings;
  address: string;
  tlsName?: string;
  username: string;
  credential: string;
}): IceServer[] {
  const host = hostPart(o.address);
  const urls = [`turn:${host}:${o.turn.port}?transport=udp`, `turn:${host}:${o.turn.port}?transport=tcp`];
  if (o.tlsName) urls.push(`turns:${hostPart(o.tlsName)}:${o.turn.tlsPort}?transport=tcp`);
  return [{ urls, username: o.username, credential: o.credential }];
}

/**
 * What `pulumi destroy` runs on ssh and local hosts, which outlive the stack: the relay's container
 * and its directory (the configuration with the relay's password; root's).
 */
export function turnRemoveCommand(): string {
  return stateRemoveCommand({ container: "neko-turn", subdir: "turn", image: TURN_IMAGE, holds: "the relay's configuration and password" });
}
