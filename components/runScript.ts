/**
 * One way to run a script from `scripts/` as a Command resource, used by the builder and the host:
 * `command.remote.Command` over SSH when there is a connection, `command.local.Command` otherwise.
 * A wiring helper, not a component.
 */
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { ScriptCommand } from "../lib/shell";
import { SshConnection } from "../lib/sshFiles";

export interface RunArgs {
  script: pulumi.Input<ScriptCommand>;
  /** Values whose change re-runs the command although its text did not change. */
  triggers?: pulumi.Input<unknown>[];
  /** "none" for commands whose output or errors could show a secret. */
  logging?: "stdout" | "stderr" | "stdoutAndStderr" | "none";
  timeoutMinutes?: number;
}

export interface RunOptions {
  parent: pulumi.Resource;
  dependsOn?: pulumi.Resource[];
  /** The machine may be fresh: keep dialing until it answers (readiness steps only). */
  waitForHost?: boolean;
}

export type ScriptResource = pulumi.Resource & { stdout: pulumi.Output<string> };

/** The SSH connection of an existing host given in the stack config. Secret: it holds the key. */
export function configuredConnection(s: SshConnection): pulumi.Output<SshConnection> {
  return pulumi.secret(pulumi.output({ host: s.host, port: s.port, user: s.user, privateKey: s.privateKey, hostKey: s.hostKey }));
}

export function runScript(
  name: string,
  connection: pulumi.Output<SshConnection> | undefined,
  args: RunArgs,
  opts: RunOptions,
): ScriptResource {
  const script = pulumi.output(args.script);
  const common = {
    create: script.command,
    stdin: script.stdin,
    triggers: args.triggers,
    // Outputs stay small (a store path, a digest) and are not fed back into the next run.
    addPreviousOutputInEnv: false,
    logging: args.logging,
  };
  const minutes = `${args.timeoutMinutes ?? 60}m`;
  const resourceOpts: pulumi.CustomResourceOptions = {
    parent: opts.parent,
    dependsOn: opts.dependsOn ?? [],
    customTimeouts: { create: minutes, update: minutes },
  };
  if (connection === undefined) {
    return new command.local.Command(name, common, resourceOpts);
  }
  // A fresh instance refuses SSH for a while: only readiness steps keep dialing.
  const conn = opts.waitForHost ? connection.apply((c) => ({ ...c, dialErrorLimit: -1, perDialTimeout: 10 })) : connection;
  return new command.remote.Command(name, { ...common, connection: conn }, resourceOpts);
}
