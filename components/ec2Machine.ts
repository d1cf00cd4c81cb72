/**
 * The EC2 wiring the builder and the host share, as plain functions that create resources parented
 * to the calling component (they are not components themselves):
 *
 * - `machineIdentity`: what outlives the instance (an Elastic IP, a login key, a host key Pulumi
 *   generates and every connection pins), so that tearing an instance down and bringing it back
 *   changes no connection;
 * - `ec2Machine`: the instance itself with its key pair, security group, role and profile, IMDSv2
 *   required and an encrypted gp3 root volume. On demand only (the README says why not spot).
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import { ALL_EGRESS, IngressRule } from "../lib/network";
import { EC2_ASSUME_ROLE } from "../lib/registry";
import { SshConnection } from "../lib/sshConnection";
import { HostKey } from "../lib/userdata";
import { RUNTIME_TAGS } from "../lib/wake";

/** The tag (value `ci-ssh`) of the security group a CI deploy opens SSH in (tools/ci-ssh-access.js). */
export const CI_SSH_TAG = "neko-infra:access";

/** The login user of Amazon Linux 2023 AMIs (and of the NVIDIA AL2023 AMI). */
export const EC2_USER = "ec2-user";

export interface MachineIdentity {
  eip: aws.ec2.Eip;
  /** The login key's public line, for the EC2 key pair. */
  publicKey: pulumi.Output<string>;
  /** The pinned host key, for cloud-init. Secret. */
  hostKey: pulumi.Output<HostKey>;
  /** How Commands reach the machine. Secret: it holds the login key. */
  connection: pulumi.Output<SshConnection>;
}

export function machineIdentity(
  name: string,
  parent: pulumi.Resource,
  tags: Record<string, string>,
  given?: { privateKey: string; publicKey: string },
): MachineIdentity {
  const hostKey = new tls.PrivateKey(`${name}-host-key`, { algorithm: "ED25519" }, { parent });
  const generated = given ? undefined : new tls.PrivateKey(`${name}-ssh-key`, { algorithm: "ED25519" }, { parent });
  const privateKey = generated ? generated.privateKeyOpenssh : pulumi.secret(given!.privateKey);
  const eip = new aws.ec2.Eip(`${name}-eip`, { domain: "vpc", tags }, { parent });
  return {
    eip,
    publicKey: generated ? generated.publicKeyOpenssh.apply((k) => k.trim()) : pulumi.output(given!.publicKey),
    hostKey: pulumi
      .all([hostKey.privateKeyOpenssh, hostKey.publicKeyOpenssh])
      .apply(([priv, pub]) => ({ privateKey: priv, publicKey: pub.trim() })),
    connection: pulumi.secret(
      pulumi.all([eip.publicIp, privateKey, hostKey.publicKeyOpenssh]).apply(([host, key, hk]) => ({
        host,
        port: 22,
        user: EC2_USER,
        privateKey: key,
        hostKey: hk.trim(),
      })),
    ),
  };
}

export interface MachineArgs {
  identity: MachineIdentity;
  tags: Record<string, string>;
  /** Security group description and its inbound rules (all outbound is allowed). */
  description: string;
  ingress: pulumi.Input<IngressRule[]>;
  /** SSM parameter holding the AMI ID. */
  amiParameter: string;
  instanceType: string;
  volumeSize: number;
  userData: pulumi.Input<string>;
  /** A subnet of the operator's; default: the region's default VPC. */
  subnetId?: string;
  /** The availability zone (to meet an EBS volume there); with a subnet, it must be the subnet's. */
  availabilityZone?: pulumi.Input<string>;
  /** Powering off stops the instance (the idle timers rely on it). */
  stopOnShutdown?: boolean;
}

export interface Machine {
  instance: aws.ec2.Instance;
  /** Its role: components attach the policies the machine needs. */
  role: aws.iam.Role;
  /** Done when the Elastic IP points at the instance. */
  association: aws.ec2.EipAssociation;
}

export function ec2Machine(name: string, parent: pulumi.Resource, a: MachineArgs): Machine {
  const { tags } = a;
  const keyPair = new aws.ec2.KeyPair(`${name}-key`, { publicKey: a.identity.publicKey, tags }, { parent });
  const vpcId = a.subnetId === undefined ? undefined : aws.ec2.getSubnetOutput({ id: a.subnetId }, { parent }).vpcId;
  const sg = new aws.ec2.SecurityGroup(
    `${name}-sg`,
    { description: a.description, vpcId, ingress: a.ingress, egress: ALL_EGRESS, tags },
    { parent },
  );
  // Where a CI job opens SSH for its own address while it deploys (tools/ci-ssh-access.js): a group
  // of its own that declares no rules, so a rule added and removed outside Pulumi is no drift, not
  // even with --refresh, and an update of the group above never captures it into the state (inline
  // rules are read back whole after every update).
  const ciSsh = new aws.ec2.SecurityGroup(
    `${name}-ci-ssh`,
    {
      description: `${a.description.split(":")[0]}: SSH from a running CI deploy only (rules added and removed by the job)`,
      vpcId,
      tags: { ...tags, [CI_SSH_TAG]: "ci-ssh" },
    },
    { parent },
  );
  const role = new aws.iam.Role(`${name}-role`, { assumeRolePolicy: EC2_ASSUME_ROLE, tags }, { parent });
  const profile = new aws.iam.InstanceProfile(`${name}-profile`, { role: role.name, tags }, { parent });
  const ami = aws.ssm.getParameterOutput({ name: a.amiParameter }, { parent });
  const instance = new aws.ec2.Instance(
    `${name}-instance`,
    {
      ami: ami.value,
      instanceType: a.instanceType,
      keyName: keyPair.keyName,
      subnetId: a.subnetId,
      // With a subnet, the subnet's zone (the caller checks they agree).
      availabilityZone: a.availabilityZone,
      vpcSecurityGroupIds: [sg.id, ciSsh.id],
      iamInstanceProfile: profile.name,
      userData: a.userData,
      instanceInitiatedShutdownBehavior: a.stopOnShutdown ? "stop" : undefined,
      metadataOptions: { httpTokens: "required", httpEndpoint: "enabled", httpPutResponseHopLimit: 1 },
      // The root volume's tags here, not `volumeTags`: those would be applied to every attached
      // volume (the profile volume has tags of its own) and flip between runs.
      rootBlockDevice: { encrypted: true, volumeSize: a.volumeSize, volumeType: "gp3", deleteOnTermination: true, tags },
      tags,
    },
    // A newer AMI is published every few weeks: it must not replace a working machine. The wake
    // link counts its starts in a tag of the instance, the host tags itself ready: not drift
    // (with `--refresh`).
    { parent, ignoreChanges: ["ami", ...RUNTIME_TAGS.flatMap((t) => [`tags["${t}"]`, `tagsAll["${t}"]`])] },
  );
  const association = new aws.ec2.EipAssociation(
    `${name}-eip-assoc`,
    { allocationId: a.identity.eip.allocationId, instanceId: instance.id },
    { parent },
  );
  return { instance, role, association };
}
