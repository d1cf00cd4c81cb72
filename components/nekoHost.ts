import * as aws from "@pulumi/aws";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { CONTAINER_NAME, containerSpec, healthBudgetSeconds, HEALTHCHECK, nekoPorts } from "../lib/neko";
import { nekoIngress, sshIngress } from "../lib/network";
import { ecrHostOfArn, pullPolicy } from "../lib/registry";
import { HostSettings, NekoSettings } from "../lib/settings";
import { scriptCommand } from "../lib/shell";
import { SshConnection, sshFilesDir, writeSshFiles } from "../lib/sshFiles";
import { hostUserData } from "../lib/userdata";
import { EC2_USER, ec2Machine, machineIdentity } from "./ec2Machine";
import { configuredConnection, runScript } from "./runScript";

/** Deep Learning Base OSS NVIDIA driver AMI (AL2023): driver and container toolkit preinstalled. */
export const GPU_AMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id";
export const X86_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

export interface NekoHostArgs {
  settings: Exclude<HostSettings, { kind: "none" }>;
  neko: NekoSettings;
  /** `repository@sha256:...` to run. */
  imageRef: pulumi.Input<string>;
  /** ECR repository the host may pull from (ecr registries). */
  repositoryArn?: pulumi.Input<string>;
  /** Credentials for pulling from a generic OCI registry. */
  registryCredentials?: { username: string; password: pulumi.Input<string> };
  tags?: Record<string, string>;
}

/**
 * The machine neko runs on (an EC2 GPU or x86 instance, or an existing SSH host) and the neko
 * container on it, run through @pulumi/docker over SSH. `pulumi up` ends only when the container
 * reports healthy, or fails with its last log lines.
 */
export class NekoHost extends pulumi.ComponentResource {
  readonly publicIp: pulumi.Output<string>;
  readonly url: pulumi.Output<string>;
  readonly sshCommand: pulumi.Output<string>;
  readonly userPassword: pulumi.Output<string>;
  readonly adminPassword: pulumi.Output<string>;
  readonly container: docker.Container;

  constructor(name: string, args: NekoHostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("neko-infra:host:NekoHost", name, {}, opts);
    const { settings: s, neko } = args;
    const tags = { ...args.tags, Name: name, "neko-infra:role": "host" };
    const ports = nekoPorts(neko);

    let connection: pulumi.Output<SshConnection>;
    let publicIp: pulumi.Output<string>;
    let waitFor: pulumi.Resource[] = [];
    if (s.kind === "ec2") {
      const identity = machineIdentity(name, this, tags);
      const ecrRegistry = args.repositoryArn === undefined ? undefined : pulumi.output(args.repositoryArn).apply(ecrHostOfArn);
      const machine = ec2Machine(name, this, {
        identity,
        tags,
        description: "neko-infra host: neko from the client networks, SSH from the admin networks",
        ingress: [sshIngress(s.sshCidrs), ...nekoIngress(ports, s.clientCidrs)],
        amiParameter: s.gpu ? GPU_AMI_PARAMETER : X86_AMI_PARAMETER,
        instanceType: s.instanceType,
        volumeSize: s.volumeSize,
        userData: pulumi
          .all([identity.hostKey, ecrRegistry])
          .apply(([hostKey, registry]) => hostUserData({ hostKey, sshUser: EC2_USER, gpu: s.gpu, ecrRegistry: registry })),
      });
      new aws.iam.RolePolicyAttachment(
        `${name}-ssm`,
        { role: machine.role.name, policyArn: "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore" },
        { parent: this },
      );
      if (args.repositoryArn !== undefined) {
        new aws.iam.RolePolicy(
          `${name}-ecr-pull`,
          { role: machine.role.id, policy: pulumi.output(args.repositoryArn).apply(pullPolicy) },
          { parent: this },
        );
      }
      waitFor = [machine.association];
      publicIp = identity.eip.publicIp;
      connection = identity.connection;
    } else {
      publicIp = pulumi.output(s.publicAddress ?? s.host);
      connection = configuredConnection(s);
    }

    const ready = runScript(
      `${name}-ready`,
      connection,
      { script: scriptCommand("wait-for-docker.sh", ["600"]), timeoutMinutes: 20 },
      { parent: this, dependsOn: waitFor, waitForHost: true },
    );

    const pullEnv = args.registryCredentials
      ? pulumi.secret(
          pulumi
            .output(args.registryCredentials.password)
            .apply((p) => ({ REGISTRY_USER: args.registryCredentials!.username, REGISTRY_PASSWORD: p })),
        )
      : pulumi.output<Record<string, string>>({});
    const pull = runScript(
      `${name}-pull`,
      connection,
      {
        script: pulumi.all([args.imageRef, pullEnv]).apply(([ref, env]) => scriptCommand("pull-image.sh", [ref], env)),
        logging: args.registryCredentials ? "none" : undefined,
        timeoutMinutes: 30,
      },
      { parent: this, dependsOn: [ready] },
    );

    this.userPassword = password(this, `${name}-user-password`, neko.userPassword);
    this.adminPassword = password(this, `${name}-admin-password`, neko.adminPassword);

    const dir = sshFilesDir(pulumi.getStack(), name);
    const provider = new docker.Provider(
      `${name}-docker`,
      {
        host: connection.apply((c) => `ssh://${c.user}@${c.host}:${c.port}`),
        sshOpts: connection.apply((c) => writeSshFiles(dir, c)),
      },
      { parent: this, dependsOn: [ready] },
    );

    const spec = pulumi.all([publicIp, args.imageRef]).apply(([ip, ref]) => containerSpec(neko, { publicAddress: ip, gpu: s.gpu }, ref));
    const envs = pulumi.secret(
      pulumi
        .all([spec, this.userPassword, this.adminPassword])
        .apply(([sp, user, admin]) => [
          ...Object.entries(sp.env).map(([k, v]) => `${k}=${v}`),
          `NEKO_MEMBER_MULTIUSER_USER_PASSWORD=${user}`,
          `NEKO_MEMBER_MULTIUSER_ADMIN_PASSWORD=${admin}`,
        ]),
    );
    this.container = new docker.Container(
      `${name}-neko`,
      {
        name: spec.name,
        // The image ID the pull printed: what the provider reads back, so it causes no diff.
        image: pull.stdout.apply((id) => id.trim()),
        platform: spec.platform,
        ports: spec.ports,
        envs,
        shmSize: spec.shmSizeMb,
        gpus: spec.gpus,
        restart: spec.restart,
        healthcheck: {
          tests: spec.healthcheck,
          interval: `${HEALTHCHECK.intervalSeconds}s`,
          timeout: `${HEALTHCHECK.timeoutSeconds}s`,
          retries: HEALTHCHECK.retries,
          startPeriod: `${HEALTHCHECK.startPeriodSeconds}s`,
        },
        // wait-healthy below waits instead: on failure it shows the container's own log lines.
        wait: false,
      },
      // envs hold the passwords: secret in state too, not only as inputs
      { parent: this, provider, dependsOn: [pull], additionalSecretOutputs: ["envs"] },
    );

    runScript(
      `${name}-healthy`,
      connection,
      {
        script: scriptCommand("wait-healthy.sh", [CONTAINER_NAME, String(healthBudgetSeconds())]),
        triggers: [this.container.id],
        timeoutMinutes: 15,
      },
      { parent: this, dependsOn: [this.container] },
    );

    this.publicIp = publicIp;
    this.url = pulumi.interpolate`http://${publicIp}:${neko.httpPort}/`;
    // Names the key file, not the key: no secret in it.
    this.sshCommand = pulumi.unsecret(
      connection.apply((c) => `ssh -i ${dir}/id -o UserKnownHostsFile=${dir}/known_hosts -p ${c.port} ${c.user}@${c.host}`),
    );
    this.registerOutputs({ url: this.url, publicIp: this.publicIp });
  }
}

function password(parent: pulumi.Resource, name: string, given: string | undefined): pulumi.Output<string> {
  if (given !== undefined) return pulumi.secret(given);
  // Secret in state through the provider already; wrapped so it stays secret wherever it flows.
  return pulumi.secret(new random.RandomPassword(name, { length: 24, special: false }, { parent }).result);
}
