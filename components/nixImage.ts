import * as pulumi from "@pulumi/pulumi";
import { hashDirectory } from "../lib/flakeSource";
import { ImageSettings } from "../lib/settings";
import { BinaryCache } from "./binaryCache";
import { NixBuilder } from "./nixBuilder";

export interface NixImageArgs {
  settings: ImageSettings;
  builder: NixBuilder;
  /** Binary cache to substitute from and upload to. */
  cache?: BinaryCache;
  /** Extra Nix `builders` line(s) for a `local` builder (sends the build to a remote machine). */
  remoteBuilders?: string;
}

/** Two hours: neko's first build from scratch takes tens of minutes on a c6i.2xlarge. */
const BUILD_BUDGET_SECONDS = 7200;

/**
 * `nix build <flake>#<attr>` on the builder. Runs again only when the flake ref, the attr or (for a
 * flake on the operator's machine) the flake's content changed. Output: the image's store path on
 * the builder, a docker-archive tarball.
 */
export class NixImage extends pulumi.ComponentResource {
  /** `/nix/store/<hash>-<name>`: the docker-archive the build produced, on the builder. */
  readonly storePath: pulumi.Output<string>;
  /** The flake reference the builder built from (a store path for a shipped local flake). */
  readonly flakeRef: pulumi.Output<string>;

  constructor(name: string, args: NixImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("neko-infra:build:NixImage", name, {}, opts);
    const { settings, builder } = args;
    const connection = builder.machine.connection;
    const purpose = `the build of ${settings.flake}#${settings.attr}`;
    // A local flake is named as configured (e.g. ./neko): command lines are the same on every
    // machine; its content hash decides when it is built again.
    const dir = settings.localPath === undefined ? undefined : localDirArgument(settings.flake);
    const contentHash = settings.localPath === undefined ? undefined : hashDirectory(settings.localPath);

    let flakeRef: pulumi.Output<string>;
    if (dir === undefined) {
      flakeRef = pulumi.output(settings.flake);
    } else if (connection === undefined) {
      flakeRef = pulumi.output(`path:${dir}`);
    } else {
      // Copied into the builder's store first; the copy's store path is content-addressed, so the
      // build below re-runs exactly when the content changed.
      const target = pulumi.unsecret(connection.apply((c) => ({ login: `${c.user}@${c.host}`, port: String(c.port) })));
      const ship = builder.run(
        `${name}-ship`,
        {
          script: "ship-flake.sh",
          args: [dir, target.login, target.port],
          env: pulumi.secret(connection.apply((c) => ({ SSH_PRIVATE_KEY: c.privateKey, SSH_HOST_KEY: c.hostKey }))),
          purpose: `copying ${settings.flake} to it`,
          budgetSeconds: 1800,
          triggers: [contentHash],
          runHere: true,
        },
        { parent: this },
      );
      // The engine marks a step's output secret when any input is (here the SSH key): a store path is not.
      flakeRef = pulumi.unsecret(ship.stdout.apply((p) => `path:${p.trim()}`));
    }

    const build = builder.run(
      `${name}-build`,
      {
        script: "nix-build.sh",
        args: pulumi.all([flakeRef]).apply(([ref]) => [ref, settings.attr]),
        env: cacheEnv(args.cache, args.remoteBuilders),
        purpose,
        budgetSeconds: BUILD_BUDGET_SECONDS,
        triggers: connection === undefined && contentHash ? [contentHash] : undefined,
      },
      { parent: this },
    );
    this.flakeRef = flakeRef;
    // Not a secret, though the engine marks it so when the build's input holds the cache's key.
    this.storePath = pulumi.unsecret(build.stdout.apply((s) => s.trim()));
    this.registerOutputs({ storePath: this.storePath, flakeRef: this.flakeRef });
  }
}

/** `./neko`, `path:./neko?x=1` -> `./neko`: the directory as configured, without `path:` and query. */
export function localDirArgument(flake: string): string {
  return (flake.startsWith("path:") ? flake.slice("path:".length) : flake).split(/[?#]/)[0];
}

/** nix-build.sh's environment; secret when there is a cache (the signing key). */
function cacheEnv(cache: BinaryCache | undefined, remoteBuilders: string | undefined): pulumi.Output<Record<string, string>> {
  const builders: Record<string, string> = remoteBuilders ? { NIX_BUILDERS: remoteBuilders } : {};
  if (cache === undefined) return pulumi.output(builders);
  return pulumi.all([cache.uri, cache.publicKey, cache.secretKey]).apply(([uri, pub, secret]): Record<string, string> => ({
    ...builders,
    NIX_CACHE: uri,
    NIX_CACHE_PUBLIC_KEY: pub,
    NIX_CACHE_SECRET_KEY: secret,
  }));
}
