/**
 * A TURN relay on the host (coturn in its own container, host network) for clients behind strict
 * NATs and firewalls: UDP and TCP on one port, TLS on another with the TLS front's certificate, and
 * a small UDP relay range. neko hands its address and credentials to browsers (ICE servers). A
 * wiring function, not a component.
 */
import * as pulumi from "@pulumi/pulumi";
import { IceServer } from "../lib/neko";
import { TlsSettings, TurnSettings } from "../lib/settings";
import { iceServers, TURN_IMAGE, TURN_USER, turnRelayEnv, turnRemoveCommand } from "../lib/turn";
import { HostMachine } from "./hostMachine";
import { runStep, Step } from "./runScript";

export interface TurnRelayArgs {
  turn: TurnSettings;
  /** The TLS front, whose certificate TURN over TLS shares; undefined: no TURN over TLS. */
  tls?: Extract<TlsSettings, { enabled: true }>;
  password: pulumi.Output<string>;
  dependsOn: pulumi.Resource[];
  /** An ssh or local host outlives the stack: `destroy` takes the relay and its files off it. */
  removeOnDelete: boolean;
}

export function turnRelay(
  name: string,
  parent: pulumi.Resource,
  host: HostMachine,
  a: TurnRelayArgs,
): { step: pulumi.Resource; iceServers: pulumi.Output<IceServer[]>; shown: pulumi.Output<Record<string, string>> } {
  const subject = host.publicAddress.apply((ip) => a.tls?.domain ?? ip);
  // coturn's configuration as a preview shows it: all but the line with the password.
  const shown = pulumi.all([host.publicAddress, subject]).apply(([address, sub]) => {
    const hidden = "\u0000password\u0000";
    const env = turnRelayEnv({
      turn: a.turn,
      publicAddress: address,
      password: hidden,
      tls: a.tls ? { subject: sub, acmeServer: a.tls.acmeServer } : undefined,
    });
    const conf = env.TURN_CONF.split("\n")
      .filter((l) => !l.includes(hidden))
      .join("\n");
    return { title: "the TURN relay", values: { ...env, TURN_CONF: conf }, secretNames: ["the TURN user's password (in TURN_CONF)"] };
  });
  const step: Step = runStep(
    name,
    host.machine,
    {
      script: "turn-relay.sh",
      args: [TURN_IMAGE],
      env: pulumi.all([host.publicAddress, subject, a.password]).apply(([address, sub, password]) =>
        turnRelayEnv({
          turn: a.turn,
          publicAddress: address,
          password,
          tls: a.tls ? { subject: sub, acmeServer: a.tls.acmeServer } : undefined,
        }),
      ),
      shown,
      purpose: "the TURN relay",
      budgetSeconds: 300,
      triggers: [host.generation],
      onDelete: a.removeOnDelete ? turnRemoveCommand() : undefined,
    },
    { parent, dependsOn: a.dependsOn },
  );
  const servers = pulumi
    .all([host.publicAddress, subject, a.password])
    .apply(([address, sub, password]) =>
      iceServers({ turn: a.turn, address, tlsName: a.tls ? sub : undefined, username: TURN_USER, credential: password }),
    );
  return { step: step.command, iceServers: pulumi.secret(servers), shown: shown.apply((sp): Record<string, string> => sp.values) };
}
