import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { sshIngress } from "../lib/network";
import { BuilderSettings } from "../lib/settings";
import { scriptCommand } from "../lib/shell";
import { SshConnection } from "../lib/sshFiles";
import { builderUserData } from "../lib/userdata";
import { EC2_USER, ec2Machine, machineIdentity } from "./ec2Machine";
import { configuredConnection, RunArgs, RunOptions, runScript, ScriptResource } from "./runScript";

/** Latest Amazon Linux 2023 for x86_64 (neko images are built for x86_64-linux only). */
export const AL2023_X86_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

export interface NixBuilderArgs {
  settings: BuilderSettings;
  /** How long a fresh builder may take to answer `nix --version` (installing Nix takes minutes). */
  readyTimeoutSeconds?: number;
  tags?: Record<string, string>;
}

/**
 * Where x86_64-linux Nix builds run: an EC2 instance this component manages (`ec2`), an existing
 * host over SSH (`ssh`), or the operator's own Nix (`local`). Scripts run on it through `run`.
 *
 * The connection of an `ec2` builder depends only on resources that outlive `enabled: false` (its
 * Elastic IP and keys), so tearing the builder down and bringing it back changes no command that
 * ran on it: nothing is rebuilt or re-pushed.
 */
export class NixBuilder extends pulumi.ComponentResource {
  readonly kind: BuilderSettings["kind"];
  /** SSH connection to the builder (not for `local`). Secret: it holds the private key. */
  readonly connection?: pulumi.Output<SshConnection>;
  /** Public address, when the builder is a remote host. */
  readonly address?: pulumi.Output<string>;
  /** IAM role of a running EC2 builder: the registry grants it push rights to its repository. */
  readonly role?: aws.iam.Role;
  /** Done once the builder answers `nix --version`; commands on the builder wait for it. */
  readonly ready?: pulumi.Resource;

  constructor(name: string, args: NixBuilderArgs, opts?: pulumi.ComponentResourceOptions) {
    super("neko-infra:build:NixBuilder", name, {}, opts);
    const s = args.settings;
    const timeout = args.readyTimeoutSeconds ?? 900;
    this.kind = s.kind;

    if (s.kind === "ec2") {
      const tags = { ...args.tags, Name: name, "neko-infra:role": "builder" };
      const identity = machineIdentity(
        name,
        this,
        tags,
        s.privateKey === undefined ? undefined : { privateKey: s.privateKey, publicKey: s.publicKey! },
      );
      this.address = identity.eip.publicIp;
      this.connection = identity.connection;

      if (s.enabled) {
        const machine = ec2Machine(name, this, {
          identity,
          tags,
          description: "neko-infra Nix builder: SSH from the configured networks only",
          ingress: [sshIngress(s.sshCidrs)],
          amiParameter: AL2023_X86_AMI_PARAMETER,
          instanceType: s.instanceType,
          volumeSize: s.volumeSize,
          userData: identity.hostKey.apply((hostKey) =>
            builderUserData({ hostKey, sshUser: EC2_USER, maxJobs: s.maxJobs, idleMinutes: s.idleMinutes }),
          ),
          spot: s.spot,
          stopOnShutdown: true, // the idle timer powers off: that must stop, not terminate
        });
        this.role = machine.role;
        // A builder that stopped itself when idle is started again by the next `up` (the AWS
        // provider files this resource under ec2transitgateway).
        const running = new aws.ec2transitgateway.InstanceState(
          `${name}-running`,
          { instanceId: machine.instance.id, state: "running" },
          { parent: this },
        );
        this.ready = this.waitForNix(name, timeout, [machine.association, running]);
      }
    } else if (s.kind === "ssh") {
      this.address = pulumi.output(s.host);
      this.connection = configuredConnection(s);
      if (s.enabled) this.ready = this.waitForNix(name, timeout, []);
    } else if (s.enabled) {
      this.ready = this.waitForNix(name, timeout, []);
    }

    this.registerOutputs({ address: this.address, ready: this.ready?.urn });
  }

  private waitForNix(name: string, timeoutSeconds: number, dependsOn: pulumi.Resource[]): pulumi.Resource {
    return this.run(
      `${name}-ready`,
      { script: scriptCommand("wait-for-nix.sh", [String(timeoutSeconds)]), timeoutMinutes: Math.ceil(timeoutSeconds / 60) + 5 },
      { parent: this, dependsOn, waitForHost: true },
    );
  }

  /** Runs a script from `scripts/` on the builder as a Command resource parented to `opts.parent`. */
  run(name: string, args: RunArgs, opts: RunOptions): ScriptResource {
    const ready = this.ready && !opts.waitForHost ? [this.ready] : [];
    return runScript(name, this.connection, args, { ...opts, dependsOn: [...(opts.dependsOn ?? []), ...ready] });
  }
}
