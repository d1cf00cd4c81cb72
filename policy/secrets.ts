/**
 * Which input properties of a resource are Pulumi secrets, for policies.
 *
 * The engine sends a policy pack each resource's inputs with secrets marked, but @pulumi/policy
 * (1.21.0) unwraps them before a `validateResource` sees them: `args.props` holds plain values and
 * nothing says which were secret (pulumi/pulumi-policy#241), in resource and stack validations alike.
 * So `installSecretPaths()` wraps the package's own deserializer (the one function its analyzer
 * calls on every request) to record, on each deserialized property bag, the paths whose value
 * arrived as a secret. `secretPathsOf(args.props)` reads them back; it is undefined when the hook
 * did not run (another @pulumi/policy, or props not made by it), and the rules then fail closed.
 *
 * tests/unit/policy.test.ts drives the package's real analyze RPC with a request holding a secret,
 * so a change of @pulumi/policy that breaks this is caught there, not in a deployment.
 */
import { specialSecretSig, specialSigKey } from "@pulumi/pulumi/runtime/rpc";

const SECRET_PATHS = Symbol.for("neko-infra.policy.secretPaths");

interface DeserializeModule {
  deserializeProperties(struct: { toJavaScript(): Record<string, unknown> }, proxySecrets: boolean): Record<string, any>;
  [SECRET_PATHS]?: true;
}

/** Paths of the secret values in a marshalled property bag: `stdin`, `environment.SSH_PRIVATE_KEY`, `triggers[3]`. */
export function secretPathsIn(raw: Record<string, unknown>): string[] {
  const found: string[] = [];
  const walk = (v: unknown, path: string) => {
    if (Array.isArray(v)) {
      v.forEach((x, i) => walk(x, `${path}[${i}]`));
    } else if (v !== null && typeof v === "object") {
      const o = v as Record<string, unknown>;
      if (o[specialSigKey] === specialSecretSig) {
        found.push(path); // everything below is secret too
        return;
      }
      if (o[specialSigKey] !== undefined) return; // assets, archives, resource references
      for (const [k, x] of Object.entries(o)) walk(x, path ? `${path}.${k}` : k);
    }
  };
  for (const [k, v] of Object.entries(raw)) walk(v, k);
  return found;
}

/** Hooks @pulumi/policy's deserializer (once per process) so that props carry their secret paths. */
export function installSecretPaths(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod: DeserializeModule = require("@pulumi/policy/deserialize");
  if (mod[SECRET_PATHS]) return;
  const original = mod.deserializeProperties;
  if (typeof original !== "function")
    throw new Error("@pulumi/policy/deserialize has no deserializeProperties: policy/secrets.ts needs updating");
  mod.deserializeProperties = function (struct, proxySecrets) {
    const props = original.call(this, struct, proxySecrets);
    const paths = Object.freeze(secretPathsIn(struct.toJavaScript()));
    // Non-enumerable: invisible to Object.keys, JSON.stringify and the rules' own reads.
    Object.defineProperty(props, SECRET_PATHS, { value: paths, enumerable: false });
    return props;
  };
  mod[SECRET_PATHS] = true;
}

/** The secret paths of `args.props` of a validation, or undefined when unknown. */
export function secretPathsOf(props: Record<string, any>): readonly string[] | undefined {
  const paths = (props as Record<symbol, unknown>)[SECRET_PATHS];
  return Array.isArray(paths) ? (paths as readonly string[]) : undefined;
}
