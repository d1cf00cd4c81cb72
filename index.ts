/**
 * neko-infra: build neko with Nix on an x86_64-linux builder, publish it by digest, run it.
 *
 *   stack config -> settings -> NixBuilder -> NixImage -> ImageRegistry -> NekoHost -> outputs
 *
 * Settings are validated before anything is registered: bad config fails `pulumi preview` with
 * every problem listed. Each component lives in components/; the logic they use is in lib/.
 */
import * as pulumi from "@pulumi/pulumi";
import { BinaryCache } from "./components/binaryCache";
import { ImageRegistry } from "./components/imageRegistry";
import { NekoHost } from "./components/nekoHost";
import { NixBuilder } from "./components/nixBuilder";
import { NixImage } from "./components/nixImage";
import { loadSettings } from "./lib/pulumiConfig";

const settings = loadSettings();
const tags = { "neko-infra:stack": `${pulumi.getProject()}/${pulumi.getStack()}` };

// Where x86_64-linux builds run: an EC2 instance, an SSH host, or the operator's own Nix.
const builder = new NixBuilder("builder", { settings: settings.builder, tags });

// A signed S3 binary cache that outlives an ec2 builder: a new builder starts warm.
const cache = settings.builder.kind === "ec2" && settings.builder.cache ? new BinaryCache("cache", { builder, tags }) : undefined;

// nix build <flake>#<attr> on the builder; re-runs only when the flake or attr changed.
const image = new NixImage("image", {
  settings: settings.image,
  builder,
  cache,
  remoteBuilders: settings.builder.kind === "local" ? settings.builder.remoteBuilders : undefined,
});

// ECR (or any OCI registry), pushed from the builder; the result is pinned by digest.
const registry = new ImageRegistry("registry", { settings: settings.registry, builder, storePath: image.storePath, tags });

// The neko container on a GPU or x86 host, healthy before `up` returns.
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
        tags,
      });

// Stack outputs (host ones only when there is a host). Passwords stay secrets.
export = {
  imageRef: registry.imageRef,
  storePath: image.storePath,
  ...(builder.address ? { builderIp: builder.address } : {}),
  ...(host
    ? {
        url: host.url,
        hostIp: host.publicIp,
        sshCommand: host.sshCommand,
        userPassword: host.userPassword,
        adminPassword: host.adminPassword,
      }
    : {}),
};
