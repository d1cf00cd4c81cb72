/**
 * neko-infra: build neko with Nix on an x86_64-linux builder, publish it by digest, run it.
 *
 *   stack config -> settings -> preflight -> NixBuilder -> NixImage -> ImageRegistry -> NekoHost -> outputs
 *
 * Settings are validated, and the AWS account checked, before anything is registered: bad config
 * fails `pulumi preview` with every problem listed. Each component lives in components/; the logic
 * they use is in lib/; the shell that runs on machines is in scripts/.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { BinaryCache } from "./components/binaryCache";
import { EC2_USER } from "./components/ec2Machine";
import { ImageRegistry } from "./components/imageRegistry";
import { NekoHost } from "./components/nekoHost";
import { NixBuilder } from "./components/nixBuilder";
import { NixImage } from "./components/nixImage";
import { preflight } from "./components/preflight";
import { loadSettings } from "./lib/pulumiConfig";
import { BuilderSettings, HostSettings } from "./lib/settings";

type MachineSettings = BuilderSettings | Exclude<HostSettings, { kind: "none" }>;

export = async () => {
  const settings = loadSettings();
  // A default VPC (or the subnets given) and enough vCPU quota, before anything is created.
  await preflight(settings);
  const stackTag = `${pulumi.getProject()}/${pulumi.getStack()}`;
  const tags = { "neko-infra:stack": stackTag };

  // Where x86_64-linux builds run: an EC2 instance (woken when a build needs it), an SSH host, or this machine.
  const builder = new NixBuilder("builder", { settings: settings.builder, stackTag, tags });

  // A signed S3 binary cache that outlives an ec2 builder: a new builder starts warm.
  const cache = settings.builder.kind === "ec2" && settings.builder.cache ? new BinaryCache("cache", { builder, tags }) : undefined;

  // nix build <flake>#<attr> on the builder; runs again only when the flake or attr changed.
  const image = new NixImage("image", {
    settings: settings.image,
    builder,
    cache,
    remoteBuilders: settings.builder.kind === "local" ? settings.builder.remoteBuilders : undefined,
  });

  // ECR or any OCI registry, pushed from the builder (or `docker load` here); pinned by digest.
  const registry = new ImageRegistry("registry", { settings: settings.registry, builder, storePath: image.storePath, tags });

  // neko on a GPU or x86 host: HTTPS, optional TURN, a kept profile, a checked rollout, idle stop.
  const host =
    settings.host.kind === "none"
      ? undefined
      : new NekoHost("host", {
          settings: settings.host,
          neko: settings.neko,
          imageRef: registry.imageRef,
          repositoryArn: registry.repositoryArn,
          registryCredentials:
            settings.registry.kind === "oci" && settings.registry.username !== undefined
              ? { username: settings.registry.username, password: pulumi.secret(settings.registry.password!) }
              : undefined,
          stackTag,
          tags,
        });

  // What `npm run status` asks, per machine (no secret: the SSH logins are the *Ssh outputs).
  const region = aws.config.region ?? "";
  const machine = (role: "host" | "builder", s: MachineSettings, address?: pulumi.Output<string>) =>
    pulumi.output(address ?? "").apply((a) => ({
      role,
      kind: s.kind,
      stackTag,
      ...(s.kind === "ssh" ? { address: s.host, port: s.port, user: s.user } : {}),
      ...(s.kind === "ec2" ? { address: a, port: 22, user: EC2_USER, region } : {}),
      ...("enabled" in s ? { enabled: s.enabled } : {}),
    }));
  const machines = pulumi.all([
    pulumi
      .all([machine("builder", settings.builder, builder.address), cache?.uri ?? pulumi.output(undefined)])
      .apply(([b, uri]) => (uri ? { ...b, cache: uri } : b)),
    ...(host && settings.host.kind !== "none" ? [machine("host", settings.host, host.publicAddress)] : []),
  ]);
  const sshLogin = (s: MachineSettings) =>
    s.kind === "ssh"
      ? pulumi.secret({ host: s.host, port: s.port, user: s.user, privateKey: s.privateKey, hostKey: s.hostKey })
      : undefined;
  const hostSsh = host?.sshAccess ?? (settings.host.kind === "ssh" ? sshLogin(settings.host) : undefined);
  const builderSsh = settings.builder.kind === "ec2" ? builder.machine.connection : sshLogin(settings.builder);

  // Stack outputs (host ones only when there is a host). Passwords and the wake link stay secrets.
  return {
    imageRef: registry.imageRef,
    storePath: image.storePath,
    machines,
    ...(builder.address ? { builderIp: builder.address } : {}),
    ...(builderSsh ? { builderSsh } : {}),
    ...(host
      ? {
          url: host.url,
          hostIp: host.publicAddress,
          ...(host.sshCommand ? { sshCommand: host.sshCommand } : {}),
          ...(hostSsh ? { hostSsh } : {}),
          ...(host.wakeLink ? { wakeLink: host.wakeLink } : {}),
          // Not secret (readable in previews: `old => new` per value); see NekoHost's ExpectedSpec.
          expected: host.expected,
          userPassword: host.userPassword,
          adminPassword: host.adminPassword,
        }
      : {}),
  };
};
