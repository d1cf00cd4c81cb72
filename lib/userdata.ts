/**
 * cloud-init user-data for the builder and the host: the pinned SSH host key, and the bootstrap
 * script from `scripts/` run once at first boot.
 */
import * as fs from "fs";
import * as path from "path";
import { stringify } from "yaml";
import { SCRIPTS_DIR } from "./shell";

export interface HostKey {
  /** OpenSSH private key text (ed25519). */
  privateKey: string;
  /** Its public key line. */
  publicKey: string;
}

const BOOTSTRAP_DIR = "/var/lib/neko-infra";

interface ExtraFile {
  path: string;
  content: string;
  permissions?: string;
}

function render(hostKey: HostKey, script: string, args: string[], extra: { files?: ExtraFile[]; commands?: string[][] } = {}): string {
  const scriptPath = `${BOOTSTRAP_DIR}/${script}`;
  const doc = {
    // Only the host key Pulumi generated and pins: no other key type is generated or kept.
    // (cloud-init's schema requires a non-empty ssh_genkeytypes; with ssh_keys given it generates none.)
    ssh_deletekeys: true,
    ssh_genkeytypes: ["ed25519"],
    ssh_keys: { ed25519_private: hostKey.privateKey, ed25519_public: hostKey.publicKey },
    write_files: [
      { path: scriptPath, permissions: "0755", owner: "root:root", content: readScript(script) },
      ...(extra.files ?? []).map((f) => ({ owner: "root:root", permissions: "0644", ...f })),
    ],
    runcmd: [["bash", scriptPath, ...args], ...(extra.commands ?? [])],
  };
  return `#cloud-config\n${stringify(doc, { lineWidth: 0 })}`;
}

function readScript(name: string): string {
  return fs.readFileSync(path.join(SCRIPTS_DIR, name), "utf8");
}

type IdleRole = "builder" | "host";

/** systemd units that run <role>-idle-stop.sh every minute. */
function idleStopFiles(role: IdleRole, idleMinutes: number): ExtraFile[] {
  const script = `${BOOTSTRAP_DIR}/${role}-idle-stop.sh`;
  const what = role === "builder" ? "this Nix builder" : "this neko host";
  return [
    { path: script, permissions: "0755", content: readScript(`${role}-idle-stop.sh`) },
    {
      path: `/etc/systemd/system/neko-${role}-idle.service`,
      content: `[Unit]\nDescription=Stop ${what} when idle\n\n[Service]\nType=oneshot\nExecStart=/usr/bin/bash ${script} ${idleMinutes}\n`,
    },
    {
      path: `/etc/systemd/system/neko-${role}-idle.timer`,
      content: `[Unit]\nDescription=Check every minute whether ${what} is idle\n\n[Timer]\nOnBootSec=5min\nOnUnitActiveSec=1min\n\n[Install]\nWantedBy=timers.target\n`,
    },
  ];
}

function idle(role: IdleRole, minutes: number): { files: ExtraFile[]; commands: string[][] } {
  if (minutes <= 0) return { files: [], commands: [] };
  return { files: idleStopFiles(role, minutes), commands: [["systemctl", "enable", "--now", `neko-${role}-idle.timer`]] };
}

export function builderUserData(o: { hostKey: HostKey; sshUser: string; maxJobs: number | "auto"; idleMinutes: number }): string {
  return render(o.hostKey, "builder-bootstrap.sh", [o.sshUser, String(o.maxJobs)], idle("builder", o.idleMinutes));
}

export interface HostUserDataArgs {
  hostKey: HostKey;
  sshUser: string;
  gpu: boolean;
  /** The ECR registry host the credential helper answers for. */
  ecrRegistry?: string;
  /** The EBS volume holding the browser profile: mounted at HOST_PROFILE_DIR. */
  profileVolumeId?: string;
  idleMinutes: number;
}

export function hostUserData(o: HostUserDataArgs): string {
  const args = [o.sshUser, o.gpu ? "1" : "0", o.ecrRegistry ?? "-", o.profileVolumeId ?? "-"];
  return render(o.hostKey, "host-bootstrap.sh", args, idle("host", o.idleMinutes));
}
