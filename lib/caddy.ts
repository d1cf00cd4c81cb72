/**
 * The TLS front's configuration: a Caddyfile for Caddy in front of neko. Caddy obtains and renews
 * the certificate itself (ACME), redirects HTTP to HTTPS, and carries WebSockets.
 *
 * Shaped by what Caddy 2.11.9 did against Pebble (notes/tls-turn-experiment.md):
 * - the site carries its own `tls { issuer acme { ... } }`: with only a global issuer, Caddy
 *   silently takes its internal CA for private and loopback IP addresses;
 * - `skip_install_trust`: with an internal CA Caddy installs its root into the system trust store;
 * - `profile shortlived` for IP subjects: Let's Encrypt issues IP certificates only with it.
 */
import { isIpAddress } from "./addresses";
import { stateRemoveCommand } from "./neko";

/**
 * Caddy 2.11 (ECR Public's mirror of the Docker official image, so EC2 hosts need no Docker Hub):
 * ACME profiles (for Let's Encrypt's short-lived IP certificates) need 2.10 or later.
 */
export const TLS_IMAGE = "public.ecr.aws/docker/library/caddy:2.11";

/**
 * The user Caddy runs as (uid:gid, no name needed): not root, so scripts/imds-guard.sh can keep it
 * from the instance metadata service while it shares the host's network. The official image gives
 * /usr/bin/caddy `cap_net_bind_service` as a file capability (caddy-docker's Dockerfile: setcap),
 * so it still binds 80 and 443.
 */
export const TLS_UID = 10080;
export const TLS_USER = `${TLS_UID}:${TLS_UID}`;

/**
 * The EC2 host's volume for the front's certificates and ACME account (mounted where
 * tls-front.sh keeps them, HOST_STATE_DIR/tls), so a new instance does not ask the ACME server
 * again: gp3's smallest size, far more than a few certificates need.
 */
export const TLS_VOLUME_GB = 1;

/** Where the front's container keeps its certificates: coturn reads them from the same place. */
export const TLS_DATA_DIR = "/data";
/** Where a private ACME server's root certificate is mounted in the front's container. */
export const TLS_ROOT_PATH = "/etc/caddy/acme-root.pem";

export interface CaddyOptions {
  /** The certificate's subject: the host's domain, or its IP address. */
  subject: string;
  email?: string;
  acmeServer: string;
  /** A private ACME server's root certificate is mounted at TLS_ROOT_PATH. */
  privateRoot: boolean;
  /** neko's HTTP port on 127.0.0.1. */
  nekoPort: number;
}

export function caddyfile(o: CaddyOptions): string {
  const ip = isIpAddress(o.subject);
  const issuer = [
    `dir ${o.acmeServer}`,
    ...(o.privateRoot ? [`trusted_roots ${TLS_ROOT_PATH}`] : []),
    ...(o.email ? [`email ${o.email}`] : []),
    // Let's Encrypt issues IP address certificates only with its short-lived profile (160 hours).
    ...(ip ? ["profile shortlived"] : []),
  ];
  return [
    "{",
    `\tstorage file_system ${TLS_DATA_DIR}`,
    "\tadmin off",
    // Caddy would save its configuration to /config, which its user may not write (and need not).
    "\tpersist_config off",
    // Never touch a trust store (Caddy would install its internal CA's root as root).
    "\tskip_install_trust",
    // Browsers send no SNI to an IP address; Caddy then looks for a certificate for the address
    // the connection arrived on, which behind 1:1 NAT (an Elastic IP) is the private one.
    ...(ip ? [`\tdefault_sni ${o.subject}`] : []),
    "}",
    // An IPv6 subject is written in brackets in a site address.
    `${o.subject.includes(":") ? `[${o.subject}]` : o.subject} {`,
    "\ttls {",
    "\t\tissuer acme {",
    ...issuer.map((l) => `\t\t\t${l}`),
    "\t\t}",
    "\t}",
    // neko behind a proxy (NEKO_SERVER_PROXY): Caddy replaces X-Forwarded-For/-Proto and passes
    // WebSocket upgrades on; X-Real-IP names the client too.
    `\treverse_proxy 127.0.0.1:${o.nekoPort} {`,
    "\t\theader_up X-Real-IP {remote_host}",
    "\t}",
    "}",
    "",
  ].join("\n");
}

/**
 * certmagic's storage key component (KeyBuilder.Safe): lower case, a few characters replaced
 * (`:` becomes `-`), anything but word characters, `@`, `.` and `-` dropped.
 */
export function storageSafe(s: string): string {
  return s
    .toLowerCase()
    .trim()
    .replace(/ /g, "_")
    .replace(/\+/g, "_plus_")
    .replace(/\*/g, "wildcard_")
    .replace(/:/g, "-")
    .replace(/\.\./g, "")
    .replace(/[^\w@.-]/g, "");
}

/**
 * Caddy's directory name for an ACME server (certmagic's issuer key: the URL's host as written,
 * port included, then its path with `/` as `-`): `https://acme-v02.api.letsencrypt.org/directory`
 * -> `acme-v02.api.letsencrypt.org-directory`, `https://10.0.0.1:14000/dir` -> `10.0.0.1-14000-dir`.
 */
export function acmeDirName(acmeServer: string): string {
  // Go's url.URL.Host keeps an explicit default port, which WHATWG URL parsing drops: read the raw text.
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/(?:[^/?#@]*@)?([^/?#]*)([^?#]*)/.exec(acmeServer);
  if (!m) throw new Error(`acmeDirName: not an absolute URL: ${acmeServer}`);
  const path = decodeURIComponent(m[2])
    .replace(/[/\\]/g, "-")
    .replace(/^-+|-+$/g, "");
  return storageSafe(path ? `${m[1]}-${path}` : m[1]);
}

/** Where Caddy stores the certificate and key of `subject` (relative to TLS_DATA_DIR). */
export function certificatePaths(acmeServer: string, subject: string): { cert: string; key: string } {
  const name = storageSafe(subject);
  const base = `certificates/${acmeDirName(acmeServer)}/${name}/${name}`;
  return { cert: `${base}.crt`, key: `${base}.key` };
}

/**
 * What `pulumi destroy` runs on ssh and local hosts, which outlive the stack: the front's container
 * and its directory (certificates, their keys, the ACME account; TLS_USER's).
 */
export function tlsRemoveCommand(): string {
  return stateRemoveCommand({ container: "neko-tls", subdir: "tls", image: TLS_IMAGE, holds: "certificates and their keys" });
}
