/**
 * @pulumi/docker reaches a host through the system `ssh`, which reads keys from files. These files
 * are written with mode 0600 under ~/.ssh/neko-infra/<stack>-<name>/ (or $NEKO_INFRA_SSH_DIR), the host key pinned in a
 * known_hosts file of their own (StrictHostKeyChecking=yes).
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

export interface SshTarget {
  host: string;
  port: number;
  privateKey: string;
  hostKey: string;
}

/** NEKO_INFRA_SSH_DIR moves the files elsewhere (CI runners, tests). */
/** How a Command reaches a machine over SSH. */
export interface SshConnection extends SshTarget {
  user: string;
}

export function sshFilesDir(stack: string, name: string): string {
  const base = process.env.NEKO_INFRA_SSH_DIR ?? path.join(os.homedir(), ".ssh", "neko-infra");
  return path.join(base, `${stack}-${name}`);
}

export function knownHostsLine(t: Pick<SshTarget, "host" | "port" | "hostKey">): string {
  const who = t.port === 22 ? t.host : `[${t.host}]:${t.port}`;
  return `${who} ${t.hostKey.trim()}\n`;
}

/** ssh options that use exactly this key and accept exactly this host key. */
export function sshOptions(dir: string): string[] {
  return [
    "-i",
    path.join(dir, "id"),
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    `UserKnownHostsFile=${path.join(dir, "known_hosts")}`,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=15",
  ];
}

export function writeSshFiles(dir: string, t: SshTarget): string[] {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = t.privateKey.endsWith("\n") ? t.privateKey : `${t.privateKey}\n`;
  fs.writeFileSync(path.join(dir, "id"), key, { mode: 0o600 });
  fs.chmodSync(path.join(dir, "id"), 0o600);
  fs.writeFileSync(path.join(dir, "known_hosts"), knownHostsLine(t), { mode: 0o600 });
  return sshOptions(dir);
}
