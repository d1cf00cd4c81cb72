import * as aws from "@pulumi/aws";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { EC2_ASSUME_ROLE } from "../lib/registry";
import { BuilderSettings } from "../lib/settings";
import { ScriptCommand, scriptCommand } from "../lib/shell";
import { builderUserData } from "../lib/userdata";
import { ALL_EGRESS, sshIngress } from "../lib/network";

/** Latest Amazon Linux 2023 for x86_64 (neko images are built for x86_64-linux only). */
export const AL2023_X86_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
const EC2_USER = "ec2-user";

export interface NixBuilderArgs {
  settings: BuilderSettings;
  /** How long a fresh builder may take to answer `nix --version` (installing Nix takes minutes). */
  readyTimeoutSeconds?: number;
  tags?: Record<string, string>;
}

export interface SshConnection {
  host: string;
  port: number;
  user: string;
  privateKey: string;
  /** Pinned public host key line: any other key is refused. */
  hostKey: string;
}

export interface RunArgs {
  script: pulumi.Input<ScriptCommand>;
  /** Values whose change re-runs the command although its text did not change. */
  triggers?: pulumi.Input<unknown>[];
  /** "none" for commands whose output or errors could show a secret. */
  logging?: "stdout" | "stderr" | "stdoutAndStderr" | "none";
  timeoutMinutes?: number;
}

type ScriptResource = pulumi.Resource & { stdout: pulumi.Output<string> };

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
      const tags = { ...args.tags, Name: `${name}`, "neko-infra:role": "builder" };
      const hostKey = new tls.PrivateKey(`${name}-host-key`, { algorithm: "ED25519" }, { parent: this });
      const generated =
        s.privateKey === undefined ? new tls.PrivateKey(`${name}-ssh-key`, { algorithm: "ED25519" }, { parent: this }) : undefined;
      const privateKey = generated ? generated.privateKeyOpenssh : pulumi.secret(s.privateKey!);
      const publicKey = generated ? generated.publicKeyOpenssh.apply((k) => k.trim()) : pulumi.output(s.publicKey!);
      const eip = new aws.ec2.Eip(`${name}-eip`, { domain: "vpc", tags }, { parent: this });
      this.address = eip.publicIp;
      this.connection = pulumi.secret(
        pulumi.all([eip.publicIp, privateKey, hostKey.publicKeyOpenssh]).apply(([host, key, hk]) => ({
          host,
          port: 22,
          user: EC2_USER,
          privateKey: key,
          hostKey: hk.trim(),
        })),
      );

      if (s.enabled) {
        const keyPair = new aws.ec2.KeyPair(`${name}-key`, { publicKey, tags }, { parent: this });
        const sg = new aws.ec2.SecurityGroup(
          `${name}-sg`,
          {
            description: "neko-infra Nix builder: SSH from the configured networks only",
            ingress: [sshIngress(s.sshCidrs)],
            egress: ALL_EGRESS,
            tags,
          },
          { parent: this },
        );
        this.role = new aws.iam.Role(`${name}-role`, { assumeRolePolicy: EC2_ASSUME_ROLE, tags }, { parent: this });
        const profile = new aws.iam.InstanceProfile(`${name}-profile`, { role: this.role.name, tags }, { parent: this });
        const ami = aws.ssm.getParameterOutput({ name: AL2023_X86_AMI_PARAMETER }, { parent: this });
        const userData = pulumi.all([hostKey.privateKeyOpenssh, hostKey.publicKeyOpenssh]).apply(([priv, pub]) =>
          builderUserData({
            hostKey: { privateKey: priv, publicKey: pub.trim() },
            sshUser: EC2_USER,
            maxJobs: s.maxJobs,
            idleMinutes: s.idleMinutes,
          }),
        );
        const instance = new aws.ec2.Instance(
          `${name}-instance`,
          {
            ami: ami.value,
            instanceType: s.instanceType,
            keyName: keyPair.keyName,
            vpcSecurityGroupIds: [sg.id],
            iamInstanceProfile: profile.name,
            userData,
            // The idle timer powers off; that must stop the instance, not terminate it.
            instanceInitiatedShutdownBehavior: "stop",
            metadataOptions: { httpTokens: "required", httpEndpoint: "enabled", httpPutResponseHopLimit: 1 },
            rootBlockDevice: { encrypted: true, volumeSize: s.volumeSize, volumeType: "gp3", deleteOnTermination: true },
            instanceMarketOptions: s.spot
              ? { marketType: "spot", spotOptions: { spotInstanceType: "persistent", instanceInterruptionBehavior: "stop" } }
              : undefined,
            tags,
            volumeTags: tags,
          },
          // A newer AMI is published every few weeks: it must not replace a working builder.
          { parent: this, ignoreChanges: ["ami"] },
        );
        const association = new aws.ec2.EipAssociation(
          `${name}-eip-assoc`,
          { allocationId: eip.allocationId, instanceId: instance.id },
          { parent: this },
        );
        // A builder that stopped itself when idle is started again by the next `up` (the AWS
        // provider files this resource under ec2transitgateway).
        const running = new aws.ec2transitgateway.InstanceState(
          `${name}-running`,
          { instanceId: instance.id, state: "running" },
          { parent: this },
        );
        this.ready = this.waitForNix(name, timeout, [association, running]);
      }
    } else if (s.kind === "ssh") {
      this.address = pulumi.output(s.host);
      this.connection = pulumi.secret(
        pulumi.output({ host: s.host, port: s.port, user: s.user, privateKey: s.privateKey, hostKey: s.hostKey }),
      );
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
  run(
    name: string,
    args: RunArgs,
    opts: { parent: pulumi.Resource; dependsOn?: pulumi.Resource[]; waitForHost?: boolean },
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
    const resourceOpts: pulumi.CustomResourceOptions = {
      parent: opts.parent,
      dependsOn: [...(opts.dependsOn ?? []), ...(this.ready && !opts.waitForHost ? [this.ready] : [])],
      customTimeouts: { create: `${args.timeoutMinutes ?? 60}m`, update: `${args.timeoutMinutes ?? 60}m` },
    };
    if (this.connection === undefined) {
      return new command.local.Command(name, common, resourceOpts);
    }
    // A fresh instance refuses SSH for a while: only the readiness step keeps dialing.
    const connection = opts.waitForHost
      ? this.connection.apply((c) => ({ ...c, dialErrorLimit: -1, perDialTimeout: 10 }))
      : this.connection;
    return new command.remote.Command(name, { ...common, connection }, resourceOpts);
  }
}
