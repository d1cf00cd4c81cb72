/**
 * The machine neko runs on, as the host's steps see it: an EC2 instance this program manages (with
 * an Elastic IP, a profile volume and an idle timer that outlive or survive it), an existing SSH
 * host, or this machine's own Docker engine. A wiring function, not a component.
 */
import * as aws from "@pulumi/aws";
import * as dns from "dns";
import * as pulumi from "@pulumi/pulumi";
import { publicIp } from "../lib/addresses";
import { TLS_VOLUME_GB } from "../lib/caddy";
import { HOST_PROFILE_DIR, HOST_STATE_DIR } from "../lib/neko";
import { hostIngress, sshIngress } from "../lib/network";
import { hostPorts } from "../lib/ports";
import { ecrHostOfArn, keepPolicy, pullPolicy } from "../lib/registry";
import { HostSettings, NekoSettings } from "../lib/settings";
import { SshConnection } from "../lib/sshConnection";
import { hostSetup, SetupRun } from "../lib/setup";
import { machineUserData } from "../lib/userdata";
import { hostReadyPolicy, WakeSpec, wakeEnvironment } from "../lib/wake";
import { profileZoneProblem } from "../lib/zones";
import { EC2_USER, ec2Machine, machineIdentity } from "./ec2Machine";
import { Machine, runStep } from "./runScript";

/** Deep Learning Base OSS NVIDIA driver AMI (AL2023): driver and container toolkit preinstalled. */
export const GPU_AMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id";
export const X86_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";

export interface HostMachineArgs {
  settings: Exclude<HostSettings, { kind: "none" }>;
  neko: NekoSettings;
  /** `<project>/<stack>`: tags the instance, finds it again to wake it, labels containers. */
  stackTag: string;
  /** ECR repository the host may pull from (ecr registries). */
  repositoryArn?: pulumi.Input<string>;
  tags: Record<string, string>;
}

export interface HostMachine {
  machine: Machine;
  /** What clients reach: an Elastic IP, the configured address, or this machine's. */
  publicAddress: pulumi.Output<string>;
  /** Where the browser profile lives on the host (a directory, or a docker volume name). */
  profile: string;
  /** Where the host's idle check reads neko's API token (EC2 hosts only). */
  stateDir?: string;
  /** Changes when the machine is replaced (its setup step ran anew): what runs on it must run again. */
  generation: pulumi.Input<string>;
  /** The instance (EC2 hosts), for the wake-on-visit link. */
  instance?: aws.ec2.Instance;
  /** How a person gets a shell there (no secret in it). */
  sshHint?: pulumi.Output<string>;
  /** The generated login of an EC2 host, for `npm run ssh`. Secret. */
  sshAccess?: pulumi.Output<SshConnection>;
}

export function hostMachine(name: string, parent: pulumi.Resource, a: HostMachineArgs): HostMachine {
  const s = a.settings;
  const base = (target: WakeSpec["target"]): WakeSpec => ({
    machine: "the host",
    target,
    method: { kind: "none" },
    ready: "docker",
    readyTimeoutSeconds: 300,
  });

  if (s.kind === "local") {
    return {
      machine: { name, parent, wakeEnv: pulumi.output(wakeEnvironment(base({ kind: "local" }))), wakeSeconds: 480 },
      publicAddress: pulumi.output(publicIp(s.publicAddress, "host.publicAddress", dns.promises.lookup)),
      profile: `neko-infra-${pulumi.getStack()}-profile`,
      generation: "local",
    };
  }

  if (s.kind === "ssh") {
    const c = { host: s.host, port: s.port, user: s.user, privateKey: s.privateKey, hostKey: s.hostKey };
    const method: WakeSpec["method"] = s.wakeCommand ? { kind: "command", command: s.wakeCommand } : { kind: "none" };
    // An existing Docker host: its setup step only creates the host's state directory (and the
    // docker group membership) where missing; the steps after it wait for its marker.
    const machine = withSetup(
      {
        name,
        parent,
        connection: pulumi.secret(c),
        wakeEnv: pulumi.secret(
          wakeEnvironment({
            ...base({ kind: "ssh", connection: c, hostKeySetting: "host.hostKey" }),
            method,
            ready: "marker",
            readyTimeoutSeconds: s.readyTimeout,
          }),
        ),
        wakeSeconds: s.readyTimeout + 180,
      },
      { setup: hostSetup({ sshUser: s.user, gpu: false, idleMinutes: 0 }), asRoot: s.user !== "root", wakeReady: "docker" },
    );
    return {
      ...machine,
      // A name is resolved here: NEKO_WEBRTC_NAT1TO1 takes addresses only.
      publicAddress: pulumi.output(
        publicIp(
          s.publicAddress ?? s.host,
          s.publicAddress === undefined ? "host.host" : "host.publicAddress",
          dns.promises.lookup,
          "host.publicAddress",
        ),
      ),
      profile: "neko-infra-profile",
      sshHint: pulumi.output(`ssh -p ${s.port} ${s.user}@${s.host}`),
    };
  }

  // EC2: the Elastic IP, keys and profile volume outlive the instance.
  const identity = machineIdentity(name, parent, a.tags);
  const tls = s.tlsFront.enabled;
  const ports = hostPorts(a.neko, { tls });
  const offered = offeredZones(parent, s);
  const subnetZone = s.subnetId === undefined ? undefined : aws.ec2.getSubnetOutput({ id: s.subnetId }, { parent }).availabilityZone;
  const profileVolume = new aws.ebs.Volume(
    `${name}-browser-profile`,
    {
      availabilityZone: profileZone(name, s, offered, subnetZone),
      size: s.profileSize,
      type: "gp3",
      encrypted: true,
      tags: { ...a.tags, Name: `${name}-browser-profile` },
      // `pulumi destroy` takes a snapshot of the profile (bookmarks, logins) before deleting it.
      finalSnapshot: true,
    },
    // The zone is chosen once: the instance follows the volume, never the other way round.
    { parent, ignoreChanges: ["availabilityZone"] },
  );
  const ecrRegistry = a.repositoryArn === undefined ? undefined : pulumi.output(a.repositoryArn).apply(ecrHostOfArn);
  const machine = ec2Machine(name, parent, {
    identity,
    tags: a.tags,
    description: "neko-infra host: neko from the client networks, SSH from the admin networks",
    ingress: pulumi.all([identity.eip.publicIp]).apply(([ip]) => [sshIngress(s.sshCidrs), ...hostIngress(ports, s.clientCidrs, ip)]),
    amiParameter: s.gpu ? GPU_AMI_PARAMETER : X86_AMI_PARAMETER,
    instanceType: s.instanceType,
    volumeSize: s.volumeSize,
    subnetId: s.subnetId,
    // The volume's zone, once the settings are known to fit it (else the attachment would fail mid-update).
    availabilityZone: pulumi.all([profileVolume.availabilityZone, offered, subnetZone]).apply(([volumeZone, zones, inSubnet]) => {
      const problem = profileZoneProblem({
        volumeZone,
        instanceType: s.instanceType,
        offered: zones,
        subnetId: s.subnetId,
        subnetZone: inSubnet,
      });
      if (problem) throw new pulumi.RunError(problem);
      return volumeZone;
    }),
    stopOnShutdown: true, // the idle timer powers off: that must stop, not terminate
    userData: identity.hostKey.apply(machineUserData),
  });
  const attachment = new aws.ec2.VolumeAttachment(
    `${name}-browser-profile-attach`,
    { instanceId: machine.instance.id, volumeId: profileVolume.id, deviceName: "/dev/sdf", stopInstanceBeforeDetaching: true },
    // One instance at a time may hold the volume: detach from the old before attaching to the new.
    { parent, deleteBeforeReplace: true },
  );
  // The front's certificates and ACME account outlive the instance too: a new instance asking
  // the ACME server again would count against Let's Encrypt's 5 duplicate certificates a week.
  // A volume of their own: the profile volume's root is the browser profile, which neko sees.
  const tlsVolume = tls
    ? new aws.ebs.Volume(
        `${name}-tls-state`,
        {
          availabilityZone: profileVolume.availabilityZone,
          size: TLS_VOLUME_GB,
          type: "gp3",
          encrypted: true,
          tags: { ...a.tags, Name: `${name}-tls-state` },
        },
        { parent, ignoreChanges: ["availabilityZone"] },
      )
    : undefined;
  const tlsAttachment = tlsVolume
    ? new aws.ec2.VolumeAttachment(
        `${name}-tls-state-attach`,
        { instanceId: machine.instance.id, volumeId: tlsVolume.id, deviceName: "/dev/sdg", stopInstanceBeforeDetaching: true },
        { parent, deleteBeforeReplace: true },
      )
    : undefined;
  if (a.repositoryArn !== undefined) {
    new aws.iam.RolePolicy(
      `${name}-ecr-pull`,
      { role: machine.role.id, policy: pulumi.output(a.repositoryArn).apply(pullPolicy) },
      { parent },
    );
    // ...and tag the image it runs (scripts/ecr-keep.sh): its only write to the repository.
    new aws.iam.RolePolicy(
      `${name}-ecr-keep`,
      { role: machine.role.id, policy: pulumi.output(a.repositoryArn).apply(keepPolicy) },
      { parent },
    );
  }
  // The wake link cannot reach neko itself: the host tells it, through one tag on itself.
  const readyTag = s.idleMinutes > 0 && s.wakeOnVisit;
  if (readyTag) {
    new aws.iam.RolePolicy(`${name}-ready-tag`, { role: machine.role.id, policy: machine.instance.arn.apply(hostReadyPolicy) }, { parent });
  }
  const wakeEnv = pulumi.all([identity.connection, machine.instance.id]).apply(([c, instanceId]) =>
    wakeEnvironment({
      ...base({ kind: "ssh", connection: c }),
      method: { kind: "ec2", region: aws.config.region ?? "", stackTag: a.stackTag, role: "host", instanceId },
      ready: "marker",
      readyTimeoutSeconds: s.readyTimeout,
    }),
  );
  const setup = withSetup(
    {
      name,
      parent,
      connection: identity.connection,
      wakeEnv,
      wakeSeconds: s.readyTimeout + 180,
      dependsOn: [machine.association, attachment, ...(tlsAttachment ? [tlsAttachment] : [])],
    },
    {
      setup: pulumi.all([ecrRegistry, profileVolume.id, tlsVolume?.id]).apply(([registry, volumeId, tlsVolumeId]) =>
        hostSetup({
          sshUser: EC2_USER,
          gpu: s.gpu,
          ecrRegistry: registry,
          profileVolumeId: volumeId,
          tlsVolumeId,
          idleMinutes: s.idleMinutes,
          readyTag,
          imdsGuard: true,
        }),
      ),
      asRoot: true,
      wakeReady: "login",
      // A new instance starts empty: set it up, then everything on it runs again.
      triggers: [machine.instance.id],
    },
  );
  return {
    ...setup,
    publicAddress: identity.eip.publicIp,
    profile: HOST_PROFILE_DIR,
    stateDir: HOST_STATE_DIR,
    instance: machine.instance,
    sshHint: pulumi.output(`npm run ssh -- ${pulumi.getStack()} host`),
    sshAccess: identity.connection,
  };
}

/** The zones of the region that offer the host's instance type. */
function offeredZones(parent: pulumi.Resource, s: Extract<HostSettings, { kind: "ec2" }>): pulumi.Output<string[]> {
  return aws.ec2
    .getInstanceTypeOfferingsOutput(
      { locationType: "availability-zone", filters: [{ name: "instance-type", values: [s.instanceType] }] },
      { parent },
    )
    .locations.apply((zones) => [...zones].sort());
}

/**
 * The zone of a new profile volume (and so of the instance): the subnet's, or the first zone (by
 * name) that offers the instance type.
 */
function profileZone(
  name: string,
  s: Extract<HostSettings, { kind: "ec2" }>,
  offered: pulumi.Output<string[]>,
  subnetZone: pulumi.Output<string> | undefined,
): pulumi.Output<string> {
  if (subnetZone) return subnetZone;
  return offered.apply((zones) => {
    if (!zones[0])
      throw new Error(
        `${name}: ${s.instanceType} is offered in no availability zone of ${aws.config.region}; choose another host.instanceType`,
      );
    return zones[0];
  });
}

/**
 * The host's setup step (scripts/host-bootstrap.sh as root), and the machine as the later steps see
 * it: after the setup, waiting for its marker. The setup step's ID is the machine's generation: a
 * new one (a new instance, or `pulumi up --replace` of the setup step after a host was wiped) runs
 * everything on the host again.
 */
function withSetup(
  machine: Machine,
  o: { setup: pulumi.Input<SetupRun>; asRoot: boolean; wakeReady: "login" | "docker"; triggers?: pulumi.Input<unknown>[] },
): { machine: Machine; generation: pulumi.Output<string> } {
  const run = pulumi.output(o.setup);
  const step = runStep(
    `${machine.name}-setup`,
    machine,
    {
      script: "host-bootstrap.sh",
      args: run.args,
      env: run.env,
      asRoot: o.asRoot,
      wakeReady: o.wakeReady,
      purpose: "its setup",
      budgetSeconds: 1200,
      triggers: o.triggers,
    },
    { parent: machine.parent },
  );
  return { machine: { ...machine, dependsOn: [...(machine.dependsOn ?? []), step.command] }, generation: step.command.id };
}
