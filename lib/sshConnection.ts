/** How Commands and scripts reach a machine over SSH, with its host key pinned. */

export interface SshConnection {
  host: string;
  port: number;
  user: string;
  /** Private key text: a secret. */
  privateKey: string;
  /** The machine's public host key line: the only key accepted. */
  hostKey: string;
}

/** A known_hosts line for exactly this host key. */
export function knownHostsLine(t: Pick<SshConnection, "host" | "port" | "hostKey">): string {
  const who = t.port === 22 ? t.host : `[${t.host}]:${t.port}`;
  return `${who} ${t.hostKey.trim()}\n`;
}
