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

/** systemd units that run builder-idle-stop.sh every minute. */
function idleStopFiles(idleMinutes: number): ExtraFile[] {
  const script = `${BOOTSTRAP_DIR}/builder-idle-stop.sh`;
  return [
    { path: script, permissions: "0755", content: readScript("builder-idle-stop.sh") },
    {
      path: "/etc/systemd/system/neko-builder-idle.service",
      content: `[Unit]\nDescription=Stop this Nix builder when idle\n\n[Service]\nType=oneshot\nExecStart=/usr/bin/bash ${script} ${idleMinutes}\n`,
    },
    {
      path: "/etc/systemd/system/neko-builder-idle.timer",
      content:
        "[Unit]\nDescription=Check every minute whether the Nix builder is idle\n\n[Timer]\nOnBootSec=5min\nOnUnitActiveSec=1min\n\n[Install]\nWantedBy=timers.target\n",
    },
  ];
}

export function builderUserData(o: { hostKey: HostKey; sshUser: string; maxJobs: number | "auto"; idleMinutes: number }): string {
  const idle = o.idleMinutes > 0;
  return render(o.hostKey, "builder-bootstrap.sh", [o.sshUser, String(o.maxJobs)], {
    files: idle ? idleStopFiles(o.idleMinutes) : [],
    commands: idle ? [["systemctl", "enable", "--now", "neko-builder-idle.timer"]] : [],
  });
}

export function hostUserData(o: { hostKey: HostKey; sshUser: string; gpu: boolean; ecrRegistry?: string }): string {
  const args = [o.sshUser, o.gpu ? "1" : "0"];
  if (o.ecrRegistry) args.push(o.ecrRegistry);
  return render(o.hostKey, "host-bootstrap.sh", args);
}
