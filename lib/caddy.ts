/**
 * The TLS front's configuration: a Caddyfile for Caddy in front of neko. Caddy obtains and renews
 * the certificate itself (ACME), redirects HTTP to HTTPS, and carries WebSockets.
 */
import { isIpAddress } from "./addresses";

/**
 * Caddy 2.11 (ECR Public's mirror of the Docker official image, so EC2 hosts need no Docker Hub):
 * ACME profiles (for Let's Encrypt's short-lived IP certificates) need 2.10 or later.
 */
export const TLS_IMAGE = "public.ecr.aws/docker/library/caddy:2.11";

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
  // Let's Encrypt issues IP address certificates only with its short-lived profile (about 6 days).
  const profile = isIpAddress(o.subject) ? "shortlived" : undefined;
  const issuer = [
    `\t\t\tdir ${o.acmeServer}`,
    ...(o.privateRoot ? [`\t\t\ttrusted_roots ${TLS_ROOT_PATH}`] : []),
    ...(profile ? [`\t\t\tprofile ${profile}`] : []),
  ];
  return [
    "{",
    ...(o.email ? [`\temail ${o.email}`] : []),
    `\tstorage file_system ${TLS_DATA_DIR}`,
    "\tadmin off",
    "}",
    // An IPv6 subject is written in brackets in a site address.
    `${o.subject.includes(":") ? `[${o.subject}]` : o.subject} {`,
    "\ttls {",
    "\t\tissuer acme {",
    ...issuer,
    "\t\t}",
    "\t}",
    // neko behind a proxy: Caddy sets X-Forwarded-For/-Proto and passes WebSocket upgrades on.
    `\treverse_proxy 127.0.0.1:${o.nekoPort}`,
    "}",
    "",
  ].join("\n");
}

/** Caddy's directory name for an ACME server: `https://acme-v02.api.letsencrypt.org/directory` -> `acme-v02.api.letsencrypt.org-directory`. */
export function acmeDirName(acmeServer: string): string {
  const u = new URL(acmeServer);
  return [u.hostname, u.port, ...u.pathname.split("/")].filter(Boolean).join("-");
}

/** Where Caddy stores the certificate and key of `subject` (inside TLS_DATA_DIR). */
export function certificatePaths(acmeServer: string, subject: string): { cert: string; key: string } {
  const base = `certificates/${acmeDirName(acmeServer)}/${subject}/${subject}`;
  return { cert: `${base}.crt`, key: `${base}.key` };
}
