import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { hashDirectory } from "../lib/flakeSource";
import { ImageSettings } from "../lib/settings";
import { scriptCommand } from "../lib/shell";
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
    const dir = settings.localPath;
    const contentHash = dir === undefined ? undefined : hashDirectory(dir);

    let flakeRef: pulumi.Output<string>;
    if (dir === undefined) {
      flakeRef = pulumi.output(settings.flake);
    } else if (builder.connection === undefined) {
      flakeRef = pulumi.output(`path:${dir}`);
    } else {
      // A flake on this machine is copied into the builder's store first; the copy's store path
      // is content-addressed, so the build below re-runs exactly when the content changed.
      const ship = new command.local.Command(
        `${name}-ship`,
        {
          create: builder.connection.apply(
            (c) =>
              scriptCommand("ship-flake.sh", [dir, `${c.user}@${c.host}`, String(c.port)], {
                SSH_PRIVATE_KEY: c.privateKey,
                SSH_HOST_KEY: c.hostKey,
              }).command,
          ),
          stdin: scriptCommand("ship-flake.sh", []).stdin,
          triggers: [contentHash],
          addPreviousOutputInEnv: false,
        },
        { parent: this, dependsOn: builder.ready ? [builder.ready] : [] },
      );
      // A store path is not a secret, though the command that printed it held the SSH key.
      flakeRef = pulumi.unsecret(ship.stdout.apply((p) => `path:${p.trim()}`));
    }

    const build = builder.run(
      `${name}-build`,
      {
        script: pulumi.all([flakeRef, cacheEnv(args.cache)]).apply(([ref, cache]) =>
          scriptCommand("nix-build.sh", [ref, settings.attr], {
            ...(args.remoteBuilders ? { NIX_BUILDERS: args.remoteBuilders } : {}),
            ...cache,
          }),
        ),
        logging: args.cache ? "stderr" : undefined, // stdout is only the store path; the cache key is in the command line
        triggers: builder.connection === undefined && contentHash ? [contentHash] : undefined,
        timeoutMinutes: 120,
      },
      { parent: this },
    );
    this.flakeRef = flakeRef;
    // A store path is not a secret, though the command that printed it may hold the cache key.
    this.storePath = pulumi.unsecret(build.stdout.apply((s) => s.trim()));
    this.registerOutputs({ storePath: this.storePath, flakeRef: this.flakeRef });
  }
}

/** nix-build.sh's cache settings; secret when there is a cache (the signing key). */
function cacheEnv(cache: BinaryCache | undefined): pulumi.Output<Record<string, string>> {
  if (cache === undefined) return pulumi.output<Record<string, string>>({});
  return pulumi.secret(
    pulumi.all([cache.uri, cache.publicKey, cache.secretKey]).apply(([uri, pub, secret]): Record<string, string> => ({
      NIX_CACHE: uri,
      NIX_CACHE_PUBLIC_KEY: pub,
      NIX_CACHE_SECRET_KEY: secret,
    })),
  );
}
