/**
 * The environment of scripts/wake.js for one machine: how to reach it, how to wake it, what
 * "ready" means there. Pure: the components turn settings into this, the tests read it.
 */
import { SshConnection } from "./sshConnection";

export type WakeTarget =
  | { kind: "local" }
  /** `hostKeySetting`: the setting that pins the host key (for ssh machines), for messages. */
  | { kind: "ssh"; connection: SshConnection; hostKeySetting?: string };

export type WakeMethod =
  | { kind: "none" }
  | { kind: "command"; command: string }
  /** Start the stopped instance tagged with this stack and role (and with this id, when known). */
  | { kind: "ec2"; region: string; stackTag: string; role: "builder" | "host"; instanceId?: string };

export interface WakeSpec {
  /** For messages: "the builder", "the host". */
  machine: string;
  target: WakeTarget;
  method: WakeMethod;
  /** marker: our bootstrap's marker file; nix / docker: the tools answer (machines we did not set up). */
  ready: "marker" | "nix" | "docker";
  readyTimeoutSeconds: number;
  /** Set when the machine is switched off in the settings: the wake step fails with this text. */
  disabled?: string;
}

/** Where the bootstraps write their marker, and cloud-init its log. */
export const BOOTSTRAP_MARKER = "/var/lib/neko-infra/bootstrap.status";
export const BOOTSTRAP_LOG = "/var/log/cloud-init-output.log";

export function wakeEnvironment(w: WakeSpec): Record<string, string> {
  const env: Record<string, string> = {
    WAKE_MACHINE: w.machine,
    TARGET: w.target.kind,
    WAKE: w.method.kind,
    READY: w.ready,
    READY_TIMEOUT: String(w.readyTimeoutSeconds),
  };
  if (w.ready === "marker") Object.assign(env, { READY_MARKER: BOOTSTRAP_MARKER, READY_LOG: BOOTSTRAP_LOG });
  if (w.target.kind === "ssh") {
    const c = w.target.connection;
    Object.assign(env, {
      SSH_HOST: c.host,
      SSH_PORT: String(c.port),
      SSH_USER: c.user,
      SSH_HOST_KEY: c.hostKey,
      SSH_PRIVATE_KEY: c.privateKey,
    });
    env.SSH_HOST_KEY_SETTING =
      w.target.hostKeySetting ?? "the host key Pulumi generated for it (was the instance replaced outside Pulumi?)";
  }
  if (w.method.kind === "command") env.WAKE_COMMAND = w.method.command;
  if (w.method.kind === "ec2") {
    // A booting instance refuses connections for a while before sshd listens.
    Object.assign(env, {
      EC2_REGION: w.method.region,
      EC2_STACK_TAG: w.method.stackTag,
      EC2_ROLE_TAG: w.method.role,
      REFUSED_GRACE: "180",
    });
    if (w.method.instanceId) env.EC2_INSTANCE_ID = w.method.instanceId;
  }
  if (w.disabled) env.DISABLED = w.disabled;
  return env;
}

/** The tag the wake-on-visit function counts its starts in (lambda/wake-on-visit.js STARTS_TAG). */
export const WAKE_STARTS_TAG = "neko-infra:wake-starts";

/**
 * The tag a host sets on itself once neko answers after a boot (scripts/host-ready.sh, epoch
 * seconds); the wake-on-visit function sends visitors on when it is newer than the last launch.
 */
export const READY_TAG = "neko-infra:ready";

/** Tags set at run time, not by Pulumi: not drift (the instance ignores them). */
export const RUNTIME_TAGS = [WAKE_STARTS_TAG, READY_TAG];

/** The host role's right to say it is ready: that one tag, on its own instance. */
export function hostReadyPolicy(instanceArn: string): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "Ready",
        Effect: "Allow",
        Action: "ec2:CreateTags",
        Resource: instanceArn,
        Condition: { "ForAllValues:StringEquals": { "aws:TagKeys": [READY_TAG] } },
      },
    ],
  });
}

/** The wake-on-visit function's rights: describe any instance (EC2 allows no narrower resource), start and tag this one. */
export function wakePolicy(instanceArn: string): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      { Sid: "Describe", Effect: "Allow", Action: "ec2:DescribeInstances", Resource: "*" },
      { Sid: "Start", Effect: "Allow", Action: "ec2:StartInstances", Resource: instanceArn },
      // Its start counter only: no other tag (a role tag, the stack tag the wake step finds it by).
      {
        Sid: "Count",
        Effect: "Allow",
        Action: "ec2:CreateTags",
        Resource: instanceArn,
        Condition: { "ForAllValues:StringEquals": { "aws:TagKeys": [WAKE_STARTS_TAG] } },
      },
    ],
  });
}
