import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { envFile, nekoEnv, nekoSecretEnv, NekoRuntime, removeCommand, rolloutEnv } from "../lib/neko";
import { runningTag } from "../lib/registry";
import { HostSettings, NekoSettings } from "../lib/settings";
import { ShownSpec, shownDigest } from "../lib/spec";
import { SshConnection } from "../lib/sshConnection";
import { HostMachine, hostMachine } from "./hostMachine";
import { runStep } from "./runScript";
import { tlsFront } from "./tlsFront";
import { turnRelay } from "./turnRelay";
import { WakeOnVisit } from "./wakeOnVisit";

export interface NekoHostArgs {
  settings: Exclude<HostSettings, { kind: "none" }>;
  neko: NekoSettings;
  /** `repository@sha256:...` (or a loaded image's `sha256:` ID) to run. */
  imageRef: pulumi.Input<string>;
  /** ECR repository the host may pull from (ecr registries). */
  repositoryArn?: pulumi.Input<string>;
  /** Credentials for pulling from a generic OCI registry. */
  registryCredentials?: { username: string; password: pulumi.Input<string> };
  /** `<project>/<stack>`. */
  stackTag: string;
  tags?: Record<string, string>;
}

/**
 * The machine neko runs on (an EC2 GPU or x86 instance, an existing SSH host, or this machine) and
 * neko on it: behind an HTTPS front where the address is public, with an optional TURN relay, a
 * browser profile that survives updates, and a rollout that checks a new image beside the running
 * one before it replaces it (and rolls back if the replacement fails). EC2 hosts stop themselves
 * when nobody is connected, and a link wakes them.
 */
export class NekoHost extends pulumi.ComponentResource {
  readonly publicAddress: pulumi.Output<string>;
  readonly url: pulumi.Output<string>;
  readonly sshCommand?: pulumi.Output<string>;
  /** The generated login of an EC2 host (`npm run ssh -- <stack> host`). Secret. */
  readonly sshAccess?: pulumi.Output<SshConnection>;
  readonly userPassword: pulumi.Output<string>;
  readonly adminPassword: pulumi.Output<string>;
  /** Opens neko, waking the host first (EC2 hosts with an idle stop). Secret. */
  readonly wakeLink?: pulumi.Output<string>;
  /** What each step on the host is asked for, without secrets (see ExpectedSpec). */
  readonly expected: pulumi.Output<ExpectedSpec>;

  constructor(name: string, args: NekoHostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("neko-infra:host:NekoHost", name, {}, opts);
    const { settings: s, neko } = args;
    const tags = { ...args.tags, Name: name, "neko-infra:role": "host" };
    const host: HostMachine = hostMachine(name, this, {
      settings: s,
      neko,
      stackTag: args.stackTag,
      repositoryArn: args.repositoryArn,
      tags,
    });
    const rt = host.publicAddress.apply((ip): NekoRuntime => ({ publicAddress: ip, gpu: s.gpu, tls: s.tlsFront.enabled }));

    this.userPassword = generated(this, `${name}-user-password`, neko.userPassword, 24);
    this.adminPassword = generated(this, `${name}-admin-password`, neko.adminPassword, 24);
    const apiToken = generated(this, `${name}-api-token`, neko.apiToken, 40);

    // ssh and local hosts outlive the stack: `destroy` takes what runs there off them.
    const outlives = s.kind !== "ec2";
    const front = s.tlsFront.enabled
      ? tlsFront(`${name}-tls`, this, host, { tls: s.tlsFront, nekoPort: neko.httpPort, removeOnDelete: outlives })
      : undefined;
    const relay = neko.turn.enabled
      ? turnRelay(`${name}-turn`, this, host, {
          turn: neko.turn,
          tls: s.tlsFront.enabled ? s.tlsFront : undefined,
          password: generated(this, `${name}-turn-password`, neko.turnPassword, 32),
          dependsOn: front ? [front.step] : [],
          removeOnDelete: outlives,
        })
      : undefined;

    const domain = s.tlsFront.enabled ? s.tlsFront.domain : undefined;
    const frontUrl = (address: string) => `https://${domain ?? (address.includes(":") ? `[${address}]` : address)}/`;
    const registryEnv = args.registryCredentials
      ? pulumi
          .output(args.registryCredentials.password)
          .apply((p) => ({ REGISTRY_USER: args.registryCredentials!.username, REGISTRY_PASSWORD: p }))
      : pulumi.output({});
    // What the rollout is asked for, without secrets: readable in previews (under its command line).
    const spec = rt.apply((r) =>
      rolloutEnv(neko, r, {
        bindAddress: s.kind === "local" ? s.bindAddress : "",
        profile: host.profile,
        stackTag: args.stackTag,
        stateDir: host.stateDir,
        frontUrl: s.tlsFront.enabled ? frontUrl(r.publicAddress) : undefined,
      }),
    );
    // The same, with the container's non-secret environment: what previews show, and what the
    // rollout records it deployed (as a digest) for `npm run status` to compare.
    const shownValues = pulumi.all([spec, rt]).apply(([sp, r]) => ({
      ...sp,
      ...nekoEnv(neko, r),
      ...(args.registryCredentials ? { REGISTRY_USER: args.registryCredentials.username } : {}),
    }));
    const env = pulumi
      .all([
        spec,
        rt,
        this.userPassword,
        this.adminPassword,
        apiToken,
        relay?.iceServers ?? pulumi.output(undefined),
        registryEnv,
        shownValues,
      ])
      .apply(([sp, r, userPassword, adminPassword, token, iceServers, registry, values]): Record<string, string> => ({
        ...sp,
        NEKO_ENV: envFile({ ...nekoEnv(neko, r), ...nekoSecretEnv({ userPassword, adminPassword, apiToken: token, iceServers }) }),
        ...(host.stateDir ? { NEKO_API_TOKEN: token } : {}),
        ...registry,
        NEKO_SHOWN_DIGEST: shownDigest(values),
      }));
    const secretNames = [
      ...Object.keys(
        nekoSecretEnv({
          userPassword: "-",
          adminPassword: "-",
          apiToken: "-",
          iceServers: relay ? [{ urls: [], username: "-", credential: "-" }] : undefined,
        }),
      ),
      ...(host.stateDir ? ["NEKO_API_TOKEN"] : []),
      ...(args.registryCredentials ? ["REGISTRY_PASSWORD"] : []),
    ];
    const shown = shownValues.apply((values): ShownSpec => ({
      title: "neko's rollout and its container environment",
      values,
      secretNames,
    }));

    const rollout = runStep(
      `${name}-neko`,
      host.machine,
      {
        script: "neko-rollout.sh",
        args: [args.imageRef],
        env,
        shown,
        purpose: pulumi.interpolate`deploying ${args.imageRef}`,
        budgetSeconds: 1800,
        // A new (or wiped and set up again) host starts empty: deploy again. (This machine: in place.)
        triggers: s.kind === "local" ? undefined : [host.generation],
        // ...neko and its recorded specs (the profile stays).
        onDelete: outlives ? removeCommand(pulumi.getStack()) : undefined,
      },
      { parent: this, dependsOn: relay ? [relay.step] : front ? [front.step] : [] },
    );
    // EC2 with ECR: once the rollout succeeded, the host tags the image it runs, which the
    // repository's lifecycle rule never expires (lib/registry.ts); a failed rollout tags nothing.
    if (s.kind === "ec2" && args.repositoryArn !== undefined) {
      runStep(
        `${name}-keep-image`,
        host.machine,
        {
          script: "ecr-keep.sh",
          args: [args.imageRef, runningTag(name)],
          purpose: pulumi.interpolate`keeping ${args.imageRef} in ECR`,
          budgetSeconds: 120,
          triggers: [host.generation],
        },
        { parent: this, dependsOn: [rollout.command] },
      );
    }
    this.expected = pulumi
      .all([shown, front?.shown, relay?.shown])
      .apply(([n, f, t]): ExpectedSpec => ({ neko: n.values, ...(f ? { front: f } : {}), ...(t ? { turn: t } : {}) }));

    this.publicAddress = host.publicAddress;
    const loopbackOnly = s.kind === "local" && s.bindAddress === "127.0.0.1";
    this.url = host.publicAddress.apply((a) =>
      s.tlsFront.enabled ? frontUrl(a) : `http://${loopbackOnly ? "localhost" : a}:${neko.httpPort}/`,
    );
    this.sshCommand = host.sshHint;
    this.sshAccess = host.sshAccess;
    if (s.kind === "ec2" && s.idleMinutes > 0 && s.wakeOnVisit && host.instance) {
      this.wakeLink = new WakeOnVisit(`${name}-visit`, { instance: host.instance, nekoUrl: this.url, tags }, { parent: this }).link;
    }
    this.registerOutputs({ url: this.url, publicAddress: this.publicAddress });
  }
}

/**
 * The stack output `expected`: the non-secret values each step on the host is given (neko's rollout
 * and container, the TLS front, the TURN relay), so that a preview's Outputs section reads a change
 * as `NEKO_DESKTOP_SCREEN: "1920x1080@30" => "2560x1440@30"`, and `npm run status` can compare
 * what runs with what the stack expects. Built only from the same values the steps show under their
 * command lines; secrets (passwords, tokens, the TURN password, registry passwords) never enter it.
 */
export interface ExpectedSpec {
  neko: Record<string, string>;
  front?: Record<string, string>;
  turn?: Record<string, string>;
}

/** A secret from the settings, or one Pulumi generates (and keeps) for this stack. */
function generated(parent: pulumi.Resource, name: string, given: string | undefined, length: number): pulumi.Output<string> {
  if (given !== undefined) return pulumi.secret(given);
  return pulumi.secret(new random.RandomPassword(name, { length, special: false }, { parent }).result);
}
