/**
 * The TURN relay's configuration (coturn) and the ICE servers neko hands to browsers. One user with
 * a generated password (long-term credentials); relaying into private networks is refused, except
 * to the host's own public address, where neko listens.
 */
import { certificatePaths } from "./caddy";
import { IceServer } from "./neko";
import { TurnSettings } from "./settings";

/** coturn 4.6 on Alpine, from GitHub's registry (coturn publishes there, not on ECR Public). */
export const TURN_IMAGE = "ghcr.io/coturn/coturn:4.6-alpine";
export const TURN_USER = "neko";
/** Where the relay's container sees the TLS front's certificates. */
export const TURN_TLS_DIR = "/tls";

const PRIVATE_RANGES = ["0.0.0.0-0.255.255.255", "10.0.0.0-10.255.255.255", "100.64.0.0-100.127.255.255", "127.0.0.0-127.255.255.255", "169.254.0.0-169.254.255.255", "172.16.0.0-172.31.255.255", "192.168.0.0-192.168.255.255"];

export interface TurnConfOptions {
  turn: TurnSettings;
  /** The host's public address: advertised for relays, and the one private-looking peer allowed. */
  publicAddress: string;
  password: string;
  /** TURN over TLS with the front's certificate for `subject`. */
  tls?: { subject: string; acmeServer: string };
}

export function turnserverConf(o: TurnConfOptions): string {
  const lines = [
    `listening-port=${o.turn.port}`,
    `min-port=${o.turn.relayPorts.low}`,
    `max-port=${o.turn.relayPorts.high}`,
    `external-ip=${o.publicAddress}`,
    "realm=neko",
    "fingerprint",
    "lt-cred-mech",
    `user=${TURN_USER}:${o.password}`,
    "no-multicast-peers",
    ...PRIVATE_RANGES.map((r) => `denied-peer-ip=${r}`),
    `allowed-peer-ip=${o.publicAddress}`,
    "no-cli",
    "no-software-attribute",
    "log-file=stdout",
    "simple-log",
  ];
  if (o.tls) {
    const { cert, key } = certificatePaths(o.tls.acmeServer, o.tls.subject);
    lines.push(`tls-listening-port=${o.turn.tlsPort}`, `cert=${TURN_TLS_DIR}/${cert}`, `pkey=${TURN_TLS_DIR}/${key}`, "no-tlsv1", "no-tlsv1_1");
  } else {
    lines.push("no-tls", "no-dtls");
  }
  return `${lines.join("\n")}\n`;
}

export function iceServers(o: { turn: TurnSettings; address: string; tlsName?: string; username: string; credential: string }): IceServer[] {
  const host = o.address.includes(":") ? `[${o.address}]` : o.address;
  const urls = [`turn:${host}:${o.turn.port}?transport=udp`, `turn:${host}:${o.turn.port}?transport=tcp`];
  if (o.tlsName) urls.push(`turns:${o.tlsName.includes(":") ? `[${o.tlsName}]` : o.tlsName}:${o.turn.tlsPort}?transport=tcp`);
  return [{ urls, username: o.username, credential: o.credential }];
}
