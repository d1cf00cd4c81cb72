/**
 * The policies of the `neko-infra` pack (policy/index.ts serves them), one per rule of
 * policy/rules.ts, all mandatory: a violation fails `pulumi preview` and stops `pulumi up` before
 * the resource is touched.
 *
 * Every stack has its policy/config/<stack>.json (tests/unit/policy.test.ts checks that, and says
 * what to put in a missing one), passed with `--policy-pack-config` (the CI workflows do). It holds
 * the two allowances, false unless the stack's settings open SSH or neko to the whole internet:
 *
 *   { "no-ssh-from-anywhere": { "allowSshFromAnywhere": true },
 *     "no-world-open-neko-ports": { "allowWorldClients": true } }
 */
import type { PolicyConfigSchema, ResourceValidationPolicy } from "@pulumi/policy";
import { RuleConfig, RuleName, RULES, TYPES } from "./rules";
import { secretPathsOf } from "./secrets";

export interface Spec {
  description: string;
  /** Resource types the rule reads; any other resource is not looked at. */
  types: string[];
  configSchema?: PolicyConfigSchema;
}

const flag = (name: keyof RuleConfig, description: string): PolicyConfigSchema => ({
  properties: { [name]: { type: "boolean", default: false, description } },
});

export const SPECS: Record<RuleName, Spec> = {
  "imdsv2-required": {
    description: "EC2 instances require IMDSv2 (metadataOptions.httpTokens: required).",
    types: [TYPES.instance],
  },
  "encrypted-volumes": {
    description: "Instance root and EBS volumes, and standalone EBS volumes (the browser profile's), are encrypted.",
    types: [TYPES.instance, TYPES.volume],
  },
  "gpu-instance": {
    description: "GPU instances (g4dn, g5, g6, g6e, gr6) have the root volume the NVIDIA AMI needs and are never the Nix builder.",
    types: [TYPES.instance],
  },
  "no-ssh-from-anywhere": {
    description: "No SSH (22/tcp) ingress from 0.0.0.0/0 or ::/0 unless the stack's policy config sets allowSshFromAnywhere.",
    types: [TYPES.securityGroup, TYPES.securityGroupRule, TYPES.ingressRule],
    configSchema: flag("allowSshFromAnywhere", "this stack may open SSH to the whole internet"),
  },
  "no-world-open-neko-ports": {
    description:
      "No port but SSH (its own rule) is open to 0.0.0.0/0 or ::/0 (neko over HTTPS, WebRTC media, TURN, neko's own HTTP port) unless the stack's policy config sets allowWorldClients; 80/tcp alone may be, beside 443/tcp in the same security group: the TLS front's ACME challenge and redirect, never neko.",
    types: [TYPES.securityGroup, TYPES.securityGroupRule, TYPES.ingressRule],
    configSchema: flag("allowWorldClients", "this stack serves neko (HTTPS, media, TURN) to the whole internet"),
  },
  "ecr-scan-on-push-immutable-tags": {
    description: "ECR repositories scan images on push and have immutable tags.",
    types: [TYPES.ecrRepository],
  },
  "ecr-wildcard-only-for-auth-token": {
    description: 'IAM policies use Resource "*" for ECR only with ecr:GetAuthorizationToken.',
    types: [TYPES.rolePolicy, TYPES.iamPolicy],
  },
  "scoped-instance-actions": {
    description:
      'IAM policies grant ec2:StartInstances, StopInstances, CreateTags and TerminateInstances only on instance ARNs, one instance each, never "*"; ec2:Describe* may use "*".',
    types: [TYPES.rolePolicy, TYPES.iamPolicy],
  },
  "no-secret-in-command-lines": {
    description:
      "Command lines (create, update, delete) hold no credentials and are not secret; stdin, environment and connection holding credential-looking text are Pulumi secrets.",
    types: [TYPES.localCommand, TYPES.remoteCommand],
  },
  "no-credentials-in-function-environment": {
    description:
      "Lambda function environments hold no credential-looking values, secret or not (Lambda shows them in plain text): a digest, or a secret read at run time.",
    types: [TYPES.lambdaFunction],
  },
};

export const policies: ResourceValidationPolicy[] = (Object.keys(SPECS) as RuleName[]).map((name) => {
  const { description, types, configSchema } = SPECS[name];
  return {
    name,
    description,
    enforcementLevel: "mandatory",
    configSchema,
    validateResource: (args, reportViolation) => {
      if (!types.includes(args.type)) return;
      const resource = { type: args.type, name: args.name, props: args.props, secretPaths: secretPathsOf(args.props) };
      for (const message of RULES[name](resource, args.getConfig<RuleConfig>())) reportViolation(message);
    },
  };
});
