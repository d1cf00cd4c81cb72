/**
 * How a script from `scripts/` runs on a machine, as Command resources: a wiring helper shared by
 * the builder and the host, not a component.
 *
 * Every step that needs a machine is preceded by a wake step: a local Command (scripts/wake.js) with
 * the step's own inputs as triggers. It runs exactly when the step will run, wakes the machine if it
 * sleeps, tells connection failures apart within seconds, and waits for the machine's bootstrap to
 * finish. A no-op `up` runs neither; a sleeping machine is never part of the desired state, so it
 * causes no diff, with or without `--refresh`.
 */
import * as crypto from "crypto";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { commandLine, readScript, ScriptName, scriptInput } from "../lib/shell";
import { ShownSpec, specComment } from "../lib/spec";
import { SshConnection } from "../lib/sshConnection";

export interface Machine {
  /** For messages: which machine. Wake steps are named `<step>-wake` and are children of `parent`. */
  name: string;
  parent: pulumi.Resource;
  /** SSH connection; undefined: the machine running `pulumi up`. Secret (it holds the key). */
  connection?: pulumi.Output<SshConnection>;
  /** scripts/wake.js's environment (WAKE_FOR is added per step). Secret when it holds the key. */
  wakeEnv: pulumi.Output<Record<string, string>>;
  /** Seconds the wake step may take: the machine's readiness timeout and some margin. */
  wakeSeconds: number;
  /** What the wake step waits for (the instance and its Elastic IP association). */
  dependsOn?: pulumi.Resource[];
}

export interface StepArgs {
  script: ScriptName;
  /** Plain arguments: shown in previews. */
  args: pulumi.Input<pulumi.Input<string>[]>;
  /** Environment, passed on standard input: secrets go here. */
  env?: pulumi.Input<Record<string, pulumi.Input<string>>>;
  /** What needs the machine, for the wake step's messages. */
  purpose: pulumi.Input<string>;
  /** Seconds the step may run; enforced on the machine for remote steps. */
  budgetSeconds: number;
  /** Values whose change re-runs the step (replacing it) although its command did not change. */
  triggers?: pulumi.Input<unknown>[];
  /** Run on this machine although the step needs the remote one (e.g. copying a flake to it). */
  runHere?: boolean;
  /** A command (no secrets) run when the step is deleted, e.g. to remove a container. */
  onDelete?: string;
  /** Run the script as root (`sudo -n` for a login user that is not root). */
  asRoot?: boolean;
  /** What this step's wake step waits for instead of the machine's usual readiness: a setup step,
   * which makes the machine ready, waits only for a login (or a Docker engine). */
  wakeReady?: "login" | "docker";
  /** Tools the step needs on a machine neko-infra does not set up (ssh and local builders), which
   * its wake step checks: `nix` to build (the default), `skopeo` to push, `docker` to load. */
  needs?: ("nix" | "skopeo" | "docker")[];
  /** The non-secret part of the step's environment, shown under its command line in previews. */
  shown?: pulumi.Input<ShownSpec>;
}

export interface Step {
  command: command.local.Command | command.remote.Command;
  wake: command.local.Command;
  stdout: pulumi.Output<string>;
}

export interface StepOptions {
  parent: pulumi.Resource;
  dependsOn?: pulumi.Resource[];
}

export function runStep(name: string, machine: Machine, args: StepArgs, opts: StepOptions): Step {
  const remote = machine.connection !== undefined && !args.runHere;
  const create = pulumi
    .all([args.args, args.shown])
    .apply(([a, shown]) => commandLine({ args: a, budgetSeconds: args.budgetSeconds, asRoot: args.asRoot }, remote) + specComment(shown));
  const stdin = pulumi.output(args.env ?? {}).apply((env) => scriptInput({ script: args.script, env, budgetSeconds: args.budgetSeconds }));
  const triggers = args.triggers ?? [];

  const wake = new command.local.Command(
    `${name}-wake`,
    {
      create: `node - # wake ${machine.name} and wait until it is ready for ${name}`,
      // Only a change of the step's own inputs (the triggers) runs it again: then the step runs too.
      update: ":",
      stdin: readScript("wake.js"),
      environment: pulumi.all([machine.wakeEnv, args.purpose]).apply(([env, purpose]) => ({
        ...env,
        WAKE_FOR: purpose,
        ...(args.wakeReady ? { READY: args.wakeReady } : {}),
        ...(args.needs ? { READY_TOOLS: args.needs.join(" ") } : {}),
      })),
      // Never a secret: the real command provider cannot read a secret that is still unknown (a
      // preview of a change upstream fails with "triggers[0]: malformed secret: missing value").
      // The digest is a slow one, since its input holds the step's secrets.
      triggers: [pulumi.unsecret(pulumi.all([create, stdin, ...triggers]).apply((parts) => fingerprint(parts)))],
      addPreviousOutputInEnv: false,
    },
    {
      parent: machine.parent,
      dependsOn: [...(machine.dependsOn ?? []), ...(opts.dependsOn ?? [])],
      customTimeouts: { create: `${machine.wakeSeconds + 60}s` },
    },
  );

  const common = {
    create,
    stdin,
    triggers: args.triggers,
    delete: args.onDelete,
    // Outputs stay small (a store path, a digest) and are not fed back into the next run.
    addPreviousOutputInEnv: false,
  };
  const resourceOpts: pulumi.CustomResourceOptions = {
    parent: opts.parent,
    dependsOn: [wake, ...(opts.dependsOn ?? [])],
    customTimeouts: { create: `${args.budgetSeconds + 60}s`, update: `${args.budgetSeconds + 60}s` },
    // A step that undoes itself on delete (removing neko) must do so before its replacement runs,
    // or the old step's delete would take away what the new one just deployed.
    deleteBeforeReplace: args.onDelete !== undefined,
  };
  const cmd = remote
    ? new command.remote.Command(
        name,
        // The wake step has just reached the machine: a few dials are plenty.
        { ...common, connection: machine.connection!.apply((c) => ({ ...c, dialErrorLimit: 4, perDialTimeout: 15 })) },
        resourceOpts,
      )
    : new command.local.Command(name, common, resourceOpts);
  return { command: cmd, wake, stdout: cmd.stdout };
}

/**
 * A digest of a step's inputs: the wake step's trigger, kept in plain text in the state. scrypt, not
 * a plain hash: the inputs include the step's secrets (a user-chosen password among them), which
 * a fast hash would let anyone with the state file guess at speed.
 */
export function fingerprint(parts: unknown[]): string {
  return crypto.scryptSync(JSON.stringify(parts), "neko-infra wake trigger", 32, { N: 1 << 14, r: 8, p: 1 }).toString("hex");
}
