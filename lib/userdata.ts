/**
 * cloud-init user-data for the builder and the host: only the SSH host key Pulumi generated and
 * every connection pins, the one thing that must be in place before SSH answers. Everything else
 * (the bootstraps, the idle stop, Nix's max-jobs) is a setup step over SSH (components/runScript.ts):
 * cloud-init runs user-data once per instance, and a changed user-data makes the provider stop and
 * start a running instance whose new scripts would then never run. This text never changes.
 */
import { stringify } from "yaml";

export interface HostKey {
  /** OpenSSH private key text (ed25519). */
  privateKey: string;
  /** Its public key line. */
  publicKey: string;
}

export function machineUserData(hostKey: HostKey): string {
  const doc = {
    // Only the host key Pulumi generated and pins: no other key type is generated or kept.
    // (cloud-init's schema requires a non-empty ssh_genkeytypes; with ssh_keys given it generates none.)
    ssh_deletekeys: true,
    ssh_genkeytypes: ["ed25519"],
    ssh_keys: { ed25519_private: hostKey.privateKey, ed25519_public: hostKey.publicKey },
  };
  return `#cloud-config\n${stringify(doc, { lineWidth: 0 })}`;
}
