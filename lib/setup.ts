/**
 * The setup steps of the machines this program prepares (scripts/builder-bootstrap.sh and
 * scripts/host-bootstrap.sh, run as root over SSH): their arguments and environment. What changes
 * with the program (the scripts, the idle stop, Nix's max-jobs) lives here and not in user-data,
 * so a change runs the setup step again on the running machine instead of restarting it.
 */
import { TLS_UID } from "./caddy";
import { readScript, restoreScript, ScriptName } from "./shell";
import { TURN_PROC_UID } from "./turn";

/**
 * The uids whose packets to the instance metadata service an EC2 host rejects
 * (scripts/imds-guard.sh): the host-network containers', Caddy and turnserver (after it drops
 * root). neko runs bridged, where the hop limit of 1 already keeps it from IMDSv2.
 */
export const IMDS_GUARD_UIDS = [TLS_UID, TURN_PROC_UID];

export interface SetupRun {
  script: ScriptName;
  /** Plain arguments: shown in previews. */
  args: string[];
  env: Record<string, string>;
}

function idleEnv(role: "builder" | "host", minutes: number): Record<string, string> {
  return minutes > 0 ? { IDLE_STOP_SCRIPT: readScript(`${role}-idle-stop.sh`) } : {};
}

export function builderSetup(o: { sshUser: string; maxJobs: number | "auto"; idleMinutes: number }): SetupRun {
  return {
    script: "builder-bootstrap.sh",
    args: [o.sshUser, String(o.maxJobs), String(o.idleMinutes)],
    env: idleEnv("builder", o.idleMinutes),
  };
}

export interface HostSetupArgs {
  sshUser: string;
  gpu: boolean;
  /** The ECR registry host the credential helper answers for. */
  ecrRegistry?: string;
  /** The EBS volume holding the browser profile: mounted at HOST_PROFILE_DIR. */
  profileVolumeId?: string;
  /** The EBS volume holding the TLS front's certificates: mounted at HOST_STATE_DIR/tls. */
  tlsVolumeId?: string;
  idleMinutes: number;
  /** Install scripts/host-ready.sh (EC2 hosts with a wake link): the instance tags itself ready. */
  readyTag?: boolean;
  /** Install scripts/imds-guard.sh (EC2 hosts): IMDS_GUARD_UIDS may not reach the metadata service. */
  imdsGuard?: boolean;
}

export function hostSetup(o: HostSetupArgs): SetupRun {
  return {
    script: "host-bootstrap.sh",
    args: [
      o.sshUser,
      o.gpu ? "1" : "0",
      o.ecrRegistry ?? "-",
      o.profileVolumeId ?? "-",
      String(o.idleMinutes),
      ...(o.tlsVolumeId ? [o.tlsVolumeId] : []),
    ],
    // neko runs with --restart=no: the setup step installs the restore that brings it back afresh.
    env: {
      ...idleEnv("host", o.idleMinutes),
      NEKO_RESTORE_SCRIPT: restoreScript(),
      ...(o.readyTag ? { NEKO_READY_SCRIPT: readScript("host-ready.sh") } : {}),
      ...(o.imdsGuard ? { NEKO_IMDS_GUARD_SCRIPT: readScript("imds-guard.sh"), IMDS_GUARD_UIDS: IMDS_GUARD_UIDS.join(" ") } : {}),
    },
  };
}
