import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { sshIngress } from "../lib/network";
import { BuilderSettings } from "../lib/settings";
import { SshConnection } from "../lib/sshConnection";
import { builderSetup } from "../lib/setup";
import { machineUserData } from "../lib/userdata";
import { WakeSpec, wakeEnvironment } from "../lib/wake";
import { EC2_USER, ec2Machine, machineIdentity } from "./ec2Machine";
import { Machine, runStep, Step, StepArgs, StepOptions } from "./runScript";

/** Latest Amazon Linux 2023 for x86_64 (neko images are built for x86_64-linux only). */
export const AL2023_X86_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

export interface NixBuilderArgs {
  settings: BuilderSettings;
  /** `<project>/<stack>`: tags the instance, and finds it again to wake it. */
  stackTag: string;
  tags?: Record<string, string>;
}

/**
 * Where x86_64-linux Nix builds run: an EC2 instance this component manages (`ec2`), an existing
 * host over SSH (`ssh`), or the operator's own Nix (`local`). Steps run on it through `run`, each
 * after a wake step that starts a sleeping builder and waits until it is ready.
 *
 * The connection of an `ec2` builder depends only on resources that outlive `enabled: false` (its
 * Elastic IP and keys), so tearing the builder down and bringing it back changes no step that ran
 * on it: nothing is rebuilt or re-pushed.
 */
export class NixBuilder extends pulumi.ComponentResource {
  readonly kind: BuilderSettings["kind"];
  /** Public address, when the builder is a remote host. */
  readonly address?: pulumi.Output<string>;
  /** IAM role of an enabled EC2 builder: the registry and the cache grant it access. */
  readonly role?: aws.iam.Role;
  /** The builder as the steps see it. */
  readonly machine: Machine;

  constructor(name: string, args: NixBuilderArgs, opts?: pulumi.ComponentResourceOptions) {
    super("neko-infra:build:NixBuilder", name, {}, opts);
    const s = args.settings;
    this.kind = s.kind;
    const disabled = s.enabled
      ? undefined
      : `the builder is disabled (builder.enabled: false), so nothing can be built or pushed; turn it back on first: npm run builder:up -- ${pulumi.getStack()}`;
    const spec = (target: WakeSpec["target"]): Omit<WakeSpec, "target"> & { target: WakeSpec["target"] } => ({
      machine: "the builder",
      target,
      method: { kind: "none" },
      ready: "nix",
      readyTimeoutSeconds: 300,
      disabled,
    });

    let connection: pulumi.Output<SshConnection> | undefined;
    let wakeEnv: pulumi.Output<Record<string, string>>;
    let readyTimeout = 300;
    let dependsOn: pulumi.Resource[] = [];
    let setup: { triggers: pulumi.Input<unknown>[] } | undefined;

    if (s.kind === "ec2") {
      const tags = { ...args.tags, Name: name, "neko-infra:role": "builder" };
      const identity = machineIdentity(
        name,
        this,
        tags,
        s.privateKey === undefined ? undefined : { privateKey: s.privateKey, publicKey: s.publicKey! },
      );
      this.address = identity.eip.publicIp;
      const conn = identity.connection;
      connection = conn;
      readyTimeout = s.readyTimeout;
      let instanceId: pulumi.Output<string | undefined> = pulumi.output(undefined);
      if (s.enabled) {
        const machine = ec2Machine(name, this, {
          identity,
          tags,
          description: "neko-infra Nix builder: SSH from the configured networks only",
          ingress: [sshIngress(s.sshCidrs)],
          amiParameter: AL2023_X86_AMI_PARAMETER,
          instanceType: s.instanceType,
          volumeSize: s.volumeSize,
          subnetId: s.subnetId,
          userData: identity.hostKey.apply(machineUserData),
          stopOnShutdown: true, // the idle timer powers off: that must stop, not terminate
        });
        this.role = machine.role;
        dependsOn = [machine.association];
        setup = { triggers: [machine.instance.id] };
        instanceId = machine.instance.id;
      }
      wakeEnv = pulumi.all([conn, instanceId]).apply(([c, id]) =>
        wakeEnvironment({
          ...spec({ kind: "ssh", connection: c }),
          method: { kind: "ec2", region: aws.config.region ?? "", stackTag: args.stackTag, role: "builder", instanceId: id },
          ready: "marker",
          readyTimeoutSeconds: s.readyTimeout,
        }),
      );
    } else if (s.kind === "ssh") {
      this.address = pulumi.output(s.host);
      const c = { host: s.host, port: s.port, user: s.user, privateKey: s.privateKey, hostKey: s.hostKey };
      connection = pulumi.secret(c);
      readyTimeout = s.readyTimeout;
      wakeEnv = pulumi.secret(
        wakeEnvironment({
          ...spec({ kind: "ssh", connection: c, hostKeySetting: "builder.hostKey" }),
          method: s.wakeCommand ? { kind: "command", command: s.wakeCommand } : { kind: "none" },
          readyTimeoutSeconds: s.readyTimeout,
        }),
      );
    } else {
      wakeEnv = pulumi.output(wakeEnvironment(spec({ kind: "local" })));
    }

    this.machine = { name, parent: this, connection, wakeEnv, wakeSeconds: readyTimeout + 180, dependsOn };
    if (setup && s.kind === "ec2") {
      // Nix, skopeo, max-jobs and the idle stop, over SSH: on every new instance, and again (on the
      // running builder, no restart) whenever the script or those settings change.
      const run = builderSetup({ sshUser: EC2_USER, maxJobs: s.maxJobs, idleMinutes: s.idleMinutes });
      const step = runStep(
        `${name}-setup`,
        this.machine,
        { ...run, asRoot: true, wakeReady: "login", purpose: "its setup", budgetSeconds: 1800, triggers: setup.triggers },
        { parent: this },
      );
      this.machine = { ...this.machine, dependsOn: [...dependsOn, step.command] };
    }
    this.registerOutputs({ address: this.address });
  }

  /** Runs a script from `scripts/` on the builder (after its wake step), parented to `opts.parent`. */
  run(name: string, args: StepArgs, opts: StepOptions): Step {
    return runStep(name, this.machine, args, opts);
  }
}
