/**
 * The rules of the neko-infra policy pack, as plain functions: a resource (type, name, input
 * properties, and which of those are secret) in, one message per problem out (none: compliant).
 * policy/index.ts serves them as mandatory policies; tests/unit/policy.test.ts calls them directly.
 *
 * Every message names the resource and what to change. The rules only read the properties they
 * need: during `pulumi preview` a property that is not known yet makes @pulumi/policy report that
 * the policy could not run, and the same policy runs again with the real value during `pulumi up`.
 * What counts as credential-looking text: policy/credentials.ts.
 */
import { instanceFamily, NVIDIA_GPU_FAMILIES } from "../lib/instanceTypes";
import { RUNNING_TAG_PATTERN } from "../lib/registry";
import { credentialsAt, credentialsIn, stringLeaves } from "./credentials";

export const TYPES = {
  instance: "aws:ec2/instance:Instance",
  volume: "aws:ebs/volume:Volume",
  securityGroup: "aws:ec2/securityGroup:SecurityGroup",
  securityGroupRule: "aws:ec2/securityGroupRule:SecurityGroupRule",
  ingressRule: "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
  ecrRepository: "aws:ecr/repository:Repository",
  rolePolicy: "aws:iam/rolePolicy:RolePolicy",
  iamPolicy: "aws:iam/policy:Policy",
  localCommand: "command:local:Command",
  remoteCommand: "command:remote:Command",
  lambdaFunction: "aws:lambda/function:Function",
} as const;

export interface PolicyResource {
  type: string;
  name: string;
  /** Input properties, secrets as their plain values. */
  props: Record<string, any>;
  /**
   * Which properties are secret: `stdin`, `environment` (the whole map), `environment.KEY` (one
   * entry), `a[3]` (one element). Everything below a secret path is secret too. Undefined when the
   * caller cannot tell (then rules that need it fail closed).
   */
  secretPaths?: readonly string[];
}

/** Per-stack allowances, from the policy pack config (policy/config/<stack>.json). */
export interface RuleConfig {
  allowSshFromAnywhere?: boolean;
  allowWorldClients?: boolean;
}

export type Rule = (r: PolicyResource, config?: RuleConfig) => string[];

/** Where the policy config of a stack lives, for the messages. */
const CONFIG_FILE = "policy/config/<stack>.json";

const label = (r: PolicyResource) => `${r.type} "${r.name}"`;
const show = (v: unknown) => (v === undefined ? "unset" : JSON.stringify(v));

// ------------------------------------------------------------------------------------------------
// EC2 instances and volumes
// ------------------------------------------------------------------------------------------------

/** IMDSv2 only: `metadataOptions.httpTokens: "required"` (or no metadata service at all). */
export const imdsV2Required: Rule = (r) => {
  if (r.type !== TYPES.instance) return [];
  const md = r.props.metadataOptions ?? {};
  if (md.httpEndpoint === "disabled" || md.httpTokens === "required") return [];
  return [
    `${label(r)}: IMDSv2 is not required (metadataOptions.httpTokens is ${show(md.httpTokens)}); ` +
      `set metadataOptions: { httpTokens: "required", httpPutResponseHopLimit: 1 }`,
  ];
};

/** Root and EBS volumes encrypted, on instances and as standalone volumes. */
export const encryptedVolumes: Rule = (r) => {
  if (r.type === TYPES.volume) {
    return r.props.encrypted === true ? [] : [`${label(r)}: the volume is not encrypted; set encrypted: true`];
  }
  if (r.type !== TYPES.instance) return [];
  const out: string[] = [];
  const root = r.props.rootBlockDevice;
  if (root?.encrypted !== true) {
    out.push(
      `${label(r)}: the root volume is not encrypted (rootBlockDevice.encrypted is ${show(root?.encrypted)}); ` +
        `set rootBlockDevice: { encrypted: true, ... }`,
    );
  }
  const ebs: any[] = r.props.ebsBlockDevices ?? [];
  ebs.forEach((d, i) => {
    if (d?.encrypted !== true) {
      out.push(`${label(r)}: ebsBlockDevices[${i}] (${d?.deviceName ?? "?"}) is not encrypted; set encrypted: true on it`);
    }
  });
  return out;
};

/** GPU hosts: the NVIDIA AMI's root snapshot needs 75 GB, and a GPU is money wasted on a Nix builder. */
export const GPU_AMI_MIN_VOLUME_GB = 75;
export const gpuInstance: Rule = (r) => {
  if (r.type !== TYPES.instance) return [];
  const type = r.props.instanceType;
  if (typeof type !== "string" || !(NVIDIA_GPU_FAMILIES as readonly string[]).includes(instanceFamily(type))) return [];
  const out: string[] = [];
  const size = r.props.rootBlockDevice?.volumeSize;
  if (typeof size !== "number" || size < GPU_AMI_MIN_VOLUME_GB) {
    out.push(
      `${label(r)}: ${type} runs the NVIDIA GPU AMI, whose root snapshot needs at least ${GPU_AMI_MIN_VOLUME_GB} GB ` +
        `(rootBlockDevice.volumeSize is ${show(size)}); set neko-infra:host.volumeSize to ${GPU_AMI_MIN_VOLUME_GB} or more`,
    );
  }
  if (r.props.tags?.["neko-infra:role"] === "builder") {
    out.push(
      `${label(r)}: the Nix builder is a GPU instance (${type}), billed for a GPU that builds never use; ` +
        `set neko-infra:builder.instanceType to a compute type such as c6i.2xlarge`,
    );
  }
  return out;
};

// ------------------------------------------------------------------------------------------------
// Security groups
// ------------------------------------------------------------------------------------------------

interface Ingress {
  /** Where in the resource: `ingress[1]`, or `rule` for standalone rule resources. */
  where: string;
  /** "tcp", "udp", "all", or another protocol name/number. */
  protocol: string;
  fromPort: number;
  toPort: number;
  cidrs: string[];
  description?: string;
}

function normalizeProtocol(p: unknown): string {
  const s = String(p ?? "").toLowerCase();
  if (s === "-1" || s === "all") return "all";
  if (s === "6") return "tcp";
  if (s === "17") return "udp";
  return s;
}

/** The ingress rules a security group resource (inline, classic rule or VPC ingress rule) opens. */
function ingressRules(r: PolicyResource): Ingress[] {
  const p = r.props;
  if (r.type === TYPES.securityGroup) {
    const rules: any[] = p.ingress ?? [];
    return rules.map((x, i) => ({
      where: `ingress[${i}]`,
      protocol: normalizeProtocol(x.protocol),
      fromPort: Number(x.fromPort ?? 0),
      toPort: Number(x.toPort ?? 0),
      cidrs: [...(x.cidrBlocks ?? []), ...(x.ipv6CidrBlocks ?? [])],
      description: x.description,
    }));
  }
  if (r.type === TYPES.securityGroupRule) {
    if (p.type !== "ingress") return [];
    return [
      {
        where: "rule",
        protocol: normalizeProtocol(p.protocol),
        fromPort: Number(p.fromPort ?? 0),
        toPort: Number(p.toPort ?? 0),
        cidrs: [...(p.cidrBlocks ?? []), ...(p.ipv6CidrBlocks ?? [])],
        description: p.description,
      },
    ];
  }
  if (r.type === TYPES.ingressRule) {
    return [
      {
        where: "rule",
        protocol: normalizeProtocol(p.ipProtocol),
        fromPort: Number(p.fromPort ?? 0),
        toPort: Number(p.toPort ?? 65535),
        cidrs: [p.cidrIpv4, p.cidrIpv6].filter((c): c is string => typeof c === "string"),
        description: p.description,
      },
    ];
  }
  return [];
}

/** A /0 network, IPv4 or IPv6: the whole internet. */
const isWorld = (cidr: string) => /\/0$/.test(cidr.trim());
const covers = (rule: Ingress, port: number) => rule.protocol === "all" || (rule.fromPort <= port && port <= rule.toPort);
const portText = (rule: Ingress) =>
  rule.protocol === "all"
    ? "every port and protocol"
    : `${rule.fromPort === rule.toPort ? rule.fromPort : `${rule.fromPort}-${rule.toPort}`}/${rule.protocol}`;

/** No SSH (22/tcp) from 0.0.0.0/0 or ::/0, unless the stack's policy config allows it. */
export const noSshFromAnywhere: Rule = (r, config = {}) => {
  if (config.allowSshFromAnywhere === true) return [];
  return ingressRules(r)
    .filter((x) => (x.protocol === "tcp" || x.protocol === "all") && covers(x, 22))
    .flatMap((x) => {
      const world = x.cidrs.filter(isWorld);
      if (!world.length) return [];
      return [
        `${label(r)}: ${x.where} opens SSH (${portText(x)}) to ${world.join(", ")}; list your admin networks in ` +
          `neko-infra:builder.sshCidrs / neko-infra:host.sshCidrs instead, or set "allowSshFromAnywhere": true ` +
          `for policy "no-ssh-from-anywhere" in ${CONFIG_FILE} to mean it`,
      ];
    });
};

/** The TLS front's ports (lib/ports.ts): ACME's HTTP challenge and the redirect on 80, HTTPS on 443. */
export const ACME_HTTP_PORT = 80;
export const HTTPS_PORT = 443;
const isPort = (rule: Ingress, port: number) => rule.protocol === "tcp" && rule.fromPort === port && rule.toPort === port;

/**
 * No port but SSH (which has its own rule) reachable from the whole internet, unless the stack's
 * policy config allows it: neko over HTTPS, its WebRTC media, TURN, and neko's own HTTP port.
 *
 * One exception: 80/tcp alone, in a security group that also opens 443/tcp. That is the TLS front
 * (Caddy): Let's Encrypt's HTTP challenge comes from anywhere, so port 80 must be open to everyone,
 * and Caddy answers there only the challenge and a redirect to HTTPS; neko never listens on 80
 * (lib/ports.ts). Without 443 beside it, a world-open 80 serves something else. A standalone rule
 * resource cannot show what else its group opens, so it gets no exception.
 */
export const noWorldClients: Rule = (r, config = {}) => {
  if (config.allowWorldClients === true) return [];
  const rules = ingressRules(r);
  const tlsFront = r.type === TYPES.securityGroup && rules.some((x) => x.protocol === "tcp" && covers(x, HTTPS_PORT));
  return rules
    .filter((x) => ["tcp", "udp", "all"].includes(x.protocol))
    .filter((x) => !isPort(x, 22))
    .flatMap((x) => {
      const world = x.cidrs.filter(isWorld);
      if (!world.length) return [];
      if (isPort(x, ACME_HTTP_PORT) && tlsFront) return [];
      const what = x.description ? ` (${x.description})` : "";
      const acme = !isPort(x, ACME_HTTP_PORT)
        ? ""
        : r.type === TYPES.securityGroup
          ? ` (port ${ACME_HTTP_PORT} may be open to everyone only for the TLS front's ACME challenge, in a group that also opens ${HTTPS_PORT}/tcp: this one does not)`
          : ` (port ${ACME_HTTP_PORT} may be open to everyone only for the TLS front's ACME challenge, declared in the ingress of a security group that also opens ${HTTPS_PORT}/tcp; a standalone rule cannot show that)`;
      return [
        `${label(r)}: ${x.where} opens ${portText(x)}${what} to ${world.join(", ")}${acme}; list the client networks in ` +
          `neko-infra:host.clientCidrs, or set "allowWorldClients": true for policy "no-world-open-neko-ports" ` +
          `in ${CONFIG_FILE} to serve neko to everyone`,
      ];
    });
};

// ------------------------------------------------------------------------------------------------
// ECR and IAM
// ------------------------------------------------------------------------------------------------

/** ECR repositories scan on push and never let a tag move. */
export const ecrRepositoryHardened: Rule = (r) => {
  if (r.type !== TYPES.ecrRepository) return [];
  const out: string[] = [];
  if (r.props.imageScanningConfiguration?.scanOnPush !== true) {
    out.push(
      `${label(r)}: images are not scanned on push; set imageScanningConfiguration: { scanOnPush: true } ` +
        `(neko-infra:registry.scanOnPush: true)`,
    );
  }
  // Immutable; the one exclusion allowed is the tag hosts move onto the image they run.
  const exclusions = (r.props.imageTagMutabilityExclusionFilters ?? []) as { filter?: string; filterType?: string }[];
  const onlyRunning = exclusions.length > 0 && exclusions.every((f) => f.filter === RUNNING_TAG_PATTERN && f.filterType === "WILDCARD");
  if (!(r.props.imageTagMutability === "IMMUTABLE" || (r.props.imageTagMutability === "IMMUTABLE_WITH_EXCLUSION" && onlyRunning))) {
    out.push(
      `${label(r)}: tags are mutable (imageTagMutability is ${show(r.props.imageTagMutability)}${exclusions.length ? `, excluding ${show(exclusions.map((f) => f.filter))}` : ""}); set imageTagMutability: "IMMUTABLE" (or "IMMUTABLE_WITH_EXCLUSION" excluding only ${RUNNING_TAG_PATTERN})`,
    );
  }
  return out;
};

const asList = (v: unknown): string[] => (v === undefined ? [] : Array.isArray(v) ? v.map(String) : [String(v)]);
const AUTH_TOKEN = "ecr:getauthorizationtoken";
/** Could the action pattern match an ECR action? (`ecr:PutImage`, `ecr:*`, `ecr:Get*`, `*`) */
const touchesEcr = (action: string) => action === "*" || action.toLowerCase().startsWith("ecr:");

/** The statements of an IAM policy resource's document, or why they cannot be read. */
function policyStatements(r: PolicyResource): { statements: any[] } | { problem: string } {
  let doc: any = r.props.policy;
  if (typeof doc === "string") {
    try {
      doc = JSON.parse(doc);
    } catch {
      return { problem: `${label(r)}: policy is not valid JSON; give a JSON policy document` };
    }
  }
  return { statements: doc?.Statement === undefined ? [] : Array.isArray(doc.Statement) ? doc.Statement : [doc.Statement] };
}
const statementId = (s: any, i: number) => (s.Sid ? `statement "${s.Sid}" (#${i})` : `statement #${i}`);

/** In IAM policies, ECR actions on Resource "*" are limited to ecr:GetAuthorizationToken. */
export const ecrWildcardOnlyForAuthToken: Rule = (r) => {
  if (r.type !== TYPES.rolePolicy && r.type !== TYPES.iamPolicy) return [];
  const doc = policyStatements(r);
  if ("problem" in doc) return [doc.problem];
  return doc.statements.flatMap((s, i) => {
    if (s?.Effect !== "Allow") return [];
    const id = statementId(s, i);
    const onEverything = asList(s.Resource).includes("*") || s.NotResource !== undefined;
    if (!onEverything) return [];
    const where = s.NotResource !== undefined ? "NotResource (every other resource)" : `Resource "*"`;
    if (s.NotAction !== undefined) {
      const excluded = asList(s.NotAction).map((a) => a.toLowerCase());
      if (excluded.includes("*") || excluded.includes("ecr:*")) return [];
      return [
        `${label(r)}: ${id} allows every action but ${asList(s.NotAction).join(", ")} on ${where}, ECR included; list the actions and scope ECR ones to the repository ARN`,
      ];
    }
    const broad = asList(s.Action).filter((a) => touchesEcr(a) && a.toLowerCase() !== AUTH_TOKEN);
    if (!broad.length) return [];
    return [
      `${label(r)}: ${id} grants ${broad.join(", ")} on ${where}; only ecr:GetAuthorizationToken may use "*": ` +
        `put the other ECR actions in a statement whose Resource is the repository ARN`,
    ];
  });
};

/** The EC2 actions that change an instance's state or tags: the wake-on-visit function's kind of rights. */
export const INSTANCE_ACTIONS = ["ec2:StartInstances", "ec2:StopInstances", "ec2:CreateTags", "ec2:TerminateInstances"] as const;
/** One instance: `arn:<partition>:ec2:<region>:<account>:instance/<id>`, no wildcard anywhere. */
const INSTANCE_ARN = /^arn:aws[a-z-]*:ec2:[^:*?]+:[^:*?]+:instance\/[^*?/]+$/;
/** Does the IAM action pattern (`ec2:*`, `ec2:Start*`, `*`; any case) match the action? */
const matchesAction = (pattern: string, action: string) =>
  new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, "\\$&")
      .replace(/\*/g, ".*")
      .replace(/\?/g, ".")}$`,
    "i",
  ).test(action);

/**
 * In IAM policies, ec2:StartInstances, StopInstances, CreateTags and TerminateInstances (whether
 * named, matched by a wildcard such as ec2:* or left in by a NotAction) apply only to instance ARNs,
 * each naming one instance: never "*", NotResource, or an ARN with a wildcard. ec2:Describe* is not
 * among them: EC2 offers no narrower resource for it, so it may use "*".
 */
export const scopedInstanceActions: Rule = (r) => {
  if (r.type !== TYPES.rolePolicy && r.type !== TYPES.iamPolicy) return [];
  const doc = policyStatements(r);
  if ("problem" in doc) return [doc.problem];
  return doc.statements.flatMap((s, i) => {
    if (s?.Effect !== "Allow") return [];
    const negated = s.NotAction !== undefined;
    const patterns = asList(negated ? s.NotAction : s.Action);
    const granted = INSTANCE_ACTIONS.filter((a) => patterns.some((p) => matchesAction(p, a)) !== negated);
    if (!granted.length) return [];
    const named =
      !negated && patterns.every((p) => (INSTANCE_ACTIONS as readonly string[]).some((a) => a.toLowerCase() === p.toLowerCase()));
    const how = named ? "" : negated ? ` (every action but ${patterns.join(", ")})` : ` (by ${patterns.join(", ")})`;
    const where =
      s.NotResource !== undefined
        ? ["NotResource (every other resource)"]
        : asList(s.Resource)
            .filter((x) => !INSTANCE_ARN.test(x))
            .map((x) => (x === "*" ? `Resource "*"` : `${x} (not one instance's ARN)`));
    if (!where.length) return [];
    return [
      `${label(r)}: ${statementId(s, i)} grants ${granted.join(", ")}${how} on ${where.join(", ")}; these act on instances: ` +
        `give them a statement of their own whose Resource is the instance's ARN (arn:aws:ec2:<region>:<account>:instance/<id>, ` +
        `one per instance, no wildcard); only ec2:Describe* may use "*"`,
    ];
  });
};

// ------------------------------------------------------------------------------------------------
// Commands (the scripts that run on the builder and the host, and the local steps)
// ------------------------------------------------------------------------------------------------

const COMMAND_LINES = ["create", "update", "delete"] as const;
/** Where a Command may carry credentials, as Pulumi secrets: the script's stdin, the environment, the SSH connection. */
const CREDENTIAL_INPUTS = ["stdin", "environment", "connection"] as const;

/** Is `path` (`environment.SSH_PRIVATE_KEY`) secret, itself or through a secret object or list it is in? */
const isSecretPath = (paths: readonly string[], path: string) =>
  paths.some((p) => path === p || path.startsWith(`${p}.`) || path.startsWith(`${p}[`));

/**
 * Command lines (create, update, delete) hold no credentials and are not secret: they are stored
 * in plain text, shown in every preview, and a secret one hides what runs and where. Credentials
 * travel on stdin (the `export` lines lib/shell.ts writes above the script), in `environment` or in
 * the SSH `connection`, and whatever of those holds credential-looking text must be a Pulumi
 * secret. Without secret information (policy/secrets.ts's hook did not run) that cannot be told,
 * and the rule fails closed.
 */
export const noSecretInCommandLines: Rule = (r) => {
  if (r.type !== TYPES.localCommand && r.type !== TYPES.remoteCommand) return [];
  const out: string[] = [];
  for (const line of COMMAND_LINES) {
    const text = r.props[line];
    if (typeof text !== "string") continue;
    const found = credentialsIn(text);
    if (found.length) {
      out.push(
        `${label(r)}: ${line} holds ${found.join(", ")}; a command line is stored in plain text and shown in every preview: ` +
          `pass the credential on stdin (an export line above the script, lib/shell.ts) or in environment, as a Pulumi secret`,
      );
    } else if (r.secretPaths !== undefined && isSecretPath(r.secretPaths, line)) {
      out.push(
        `${label(r)}: ${line} is a Pulumi secret, so previews show [secret] instead of what runs and where; build the ` +
          `command line from plain values only and pass secret ones on stdin`,
      );
    }
  }
  const holding = CREDENTIAL_INPUTS.flatMap((input) =>
    stringLeaves(r.props[input], input).flatMap((leaf) => {
      const found = credentialsAt(leaf, input !== "stdin");
      return found.length ? [{ path: leaf.path, found }] : [];
    }),
  );
  if (!holding.length) return out;
  const paths = r.secretPaths;
  if (paths === undefined) {
    out.push(
      `${label(r)}: cannot tell whether ${holding.map((h) => h.path).join(", ")} are secret (no secret information reached ` +
        `the policy: see policy/secrets.ts), and they hold ${[...new Set(holding.flatMap((h) => h.found))].join(", ")}; ` +
        `make them Pulumi secrets (pulumi.secret())`,
    );
    return out;
  }
  for (const h of holding.filter((h) => !isSecretPath(paths, h.path))) {
    out.push(
      `${label(r)}: ${h.path} holds ${h.found.join(", ")} but is not a Pulumi secret, so it would be stored unencrypted in ` +
        `the state and shown in diffs; make it a Pulumi secret (pulumi.secret())`,
    );
  }
  return out;
};

// ------------------------------------------------------------------------------------------------
// Lambda functions
// ------------------------------------------------------------------------------------------------

/**
 * A Lambda function's environment holds no credential-looking value, secret or not: Lambda hands
 * its environment in plain text to anyone allowed lambda:GetFunctionConfiguration, and shows it in
 * the console. The wake-on-visit function keeps only its token's SHA-256 (TOKEN_SHA256).
 */
export const noCredentialsInFunctionEnvironment: Rule = (r) => {
  if (r.type !== TYPES.lambdaFunction) return [];
  return stringLeaves(r.props.environment?.variables, "environment.variables").flatMap((leaf) => {
    const found = credentialsAt(leaf, true);
    if (!found.length) return [];
    return [
      `${label(r)}: ${leaf.path} holds ${found.join(", ")}; Lambda returns its environment in plain text to anyone allowed ` +
        `lambda:GetFunctionConfiguration, Pulumi secret or not: keep only a digest to compare with (as the wake link's ` +
        `TOKEN_SHA256), or have the function read the credential when it runs (Secrets Manager, SSM Parameter Store)`,
    ];
  });
};

/** Every rule, by the policy name it is served under. */
export const RULES = {
  "imdsv2-required": imdsV2Required,
  "encrypted-volumes": encryptedVolumes,
  "gpu-instance": gpuInstance,
  "no-ssh-from-anywhere": noSshFromAnywhere,
  "no-world-open-neko-ports": noWorldClients,
  "ecr-scan-on-push-immutable-tags": ecrRepositoryHardened,
  "ecr-wildcard-only-for-auth-token": ecrWildcardOnlyForAuthToken,
  "scoped-instance-actions": scopedInstanceActions,
  "no-secret-in-command-lines": noSecretInCommandLines,
  "no-credentials-in-function-environment": noCredentialsInFunctionEnvironment,
} satisfies Record<string, Rule>;

export type RuleName = keyof typeof RULES;

/** All problems of one resource, under every rule, each prefixed with the policy name. */
export function checkResource(r: PolicyResource, config: Partial<Record<RuleName, RuleConfig>> = {}): string[] {
  return (Object.keys(RULES) as RuleName[]).flatMap((name) => RULES[name](r, config[name]).map((m) => `[${name}] ${m}`));
}
