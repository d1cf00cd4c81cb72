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

function render(hostKey: HostKey, script: string, args: string[]): string {
  const scriptPath = `${BOOTSTRAP_DIR}/${script}`;
  const doc = {
    // Only the host key Pulumi generated and pins: no other key type is generated or kept.
    ssh_deletekeys: true,
    ssh_genkeytypes: [],
    ssh_keys: { ed25519_private: hostKey.privateKey, ed25519_public: hostKey.publicKey },
    write_files: [
      {
        path: scriptPath,
        permissions: "0755",
        owner: "root:root",
        content: fs.readFileSync(path.join(SCRIPTS_DIR, script), "utf8"),
      },
    ],
    runcmd: [["bash", scriptPath, ...args]],
  };
  return `#cloud-config\n${stringify(doc, { lineWidth: 0 })}`;
}

export function builderUserData(o: { hostKey: HostKey; sshUser: string; maxJobs: number | "auto" }): string {
  return render(o.hostKey, "builder-bootstrap.sh", [o.sshUser, String(o.maxJobs)]);
}

export function hostUserData(o: { hostKey: HostKey; sshUser: string; gpu: boolean; ecrRegistry?: string }): string {
  const args = [o.sshUser, o.gpu ? "1" : "0"];
  if (o.ecrRegistry) args.push(o.ecrRegistry);
  return render(o.hostKey, "host-bootstrap.sh", args);
}
