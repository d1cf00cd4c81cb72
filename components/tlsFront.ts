/**
 * The HTTPS front of a host: Caddy in its own container (host network), answering ACME's HTTP
 * challenge on port 80, redirecting HTTP to HTTPS, and proxying HTTPS (WebSockets included) to neko
 * on 127.0.0.1. The certificate is for the host's domain, or for its IP address (Let's Encrypt's
 * short-lived IP certificates); Caddy renews it itself. A wiring function, not a component.
 */
import * as pulumi from "@pulumi/pulumi";
import { caddyfile, TLS_IMAGE, TLS_USER, tlsRemoveCommand } from "../lib/caddy";
import { TlsSettings } from "../lib/settings";
import { HostMachine } from "./hostMachine";
import { runStep } from "./runScript";

export interface TlsFrontArgs {
  tls: Extract<TlsSettings, { enabled: true }>;
  /** neko's HTTP port on 127.0.0.1. */
  nekoPort: number;
  /** An ssh or local host outlives the stack: `destroy` takes the front and its certificates off it. */
  removeOnDelete: boolean;
}

export interface TlsFront {
  step: pulumi.Resource;
  /** What the front is asked for, for the stack's `expected` output: the image, the certificate's
   * subject and Caddy's configuration (the step's environment holds no secret; the ACME root
   * certificate is left out for its length). */
  shown: pulumi.Output<Record<string, string>>;
}

export function tlsFront(name: string, parent: pulumi.Resource, host: HostMachine, a: TlsFrontArgs): TlsFront {
  const subject = host.publicAddress.apply((ip) => a.tls.domain ?? ip);
  const env = pulumi.all([subject, host.publicAddress]).apply(([sub, address]) => ({
    TLS_CADDYFILE: caddyfile({
      subject: sub,
      email: a.tls.email,
      acmeServer: a.tls.acmeServer,
      privateRoot: a.tls.acmeRootCert !== undefined,
      nekoPort: a.nekoPort,
    }),
    TLS_USER,
    ...(a.tls.acmeRootCert ? { TLS_ROOT_CERT: a.tls.acmeRootCert } : {}),
    ...(a.tls.domain ? { TLS_EXPECT_ADDRESS: address } : {}),
  }));
  const step = runStep(
    name,
    host.machine,
    {
      script: "tls-front.sh",
      args: pulumi.all([subject]).apply(([sub]) => [TLS_IMAGE, sub]),
      env,
      purpose: pulumi.interpolate`the HTTPS front for ${subject}`,
      budgetSeconds: 600,
      triggers: [host.generation],
      onDelete: a.removeOnDelete ? tlsRemoveCommand() : undefined,
    },
    { parent },
  );
  const shown = pulumi.all([subject, env]).apply(([sub, e]): Record<string, string> => {
    const { TLS_ROOT_CERT: _root, ...rest } = e;
    return { TLS_IMAGE, TLS_SUBJECT: sub, ...rest };
  });
  return { step: step.command, shown };
}
