/**
 * The setup steps of the machines this program prepares (scripts/builder-bootstrap.sh and
 * scripts/host-bootstrap.sh, run as root over SSH): their arguments and environment. What changes
 * with the program (the scripts, the idle stop, Nix's max-jobs) lives here and not in user-data,
 * so a change runs the setup step again on the running machine instead of restarting it.
 */
import { readScript, ScriptName } from "./shell";

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
  idleMinutes: number;
  /** Install scripts/host-ready.sh (EC2 hosts with a wake link): the instance tags itself ready. */
  readyTag?: boolean;
}

export function hostSetup(o: HostSetupArgs): SetupRun {
  return {
    script: "host-bootstrap.sh",
    args: [o.sshUser, o.gpu ? "1" : "0", o.ecrRegistry ?? "-", o.profileVolumeId ?? "-", String(o.idleMinutes)],
    // neko runs with --restart=no: the setup step installs the restore that brings it back afresh.
    env: {
      ...idleEnv("host", o.idleMinutes),
      NEKO_RESTORE_SCRIPT: readScript("neko-restore.sh"),
      ...(o.readyTag ? { NEKO_READY_SCRIPT: readScript("host-ready.sh") } : {}),
    },
  };
}
