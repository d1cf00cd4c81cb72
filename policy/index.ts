/**
 * The `neko-infra` policy pack: the project's security and cost rules, all mandatory.
 *
 *   pulumi preview --stack prod --policy-pack policy --policy-pack-config policy/config/prod.json
 *
 * Rules: policy/rules.ts (credential shapes: policy/credentials.ts); the policies serving them:
 * policy/policies.ts; per-stack allowances: policy/config/<stack>.json (one per stack file).
 * Dependencies come from the repository's node_modules (`npm ci` at the root); the version reported
 * to Pulumi is policy/package.json's.
 */
import { PolicyPack } from "@pulumi/policy";
import { policies } from "./policies";
import { installSecretPaths } from "./secrets";

// Before the pack serves: lets no-secret-in-command-lines see which inputs are secrets (it fails closed without).
installSecretPaths();

new PolicyPack("neko-infra", {
  description:
    "neko-infra: IMDSv2, encrypted volumes, GPU hosts sized for their AMI, no SSH or client ports open to the world unless allowed (port 80 only for the TLS front), hardened ECR, IAM scoped to the repository and to one instance, no credentials on command lines or in Lambda environments, secret stdin/environment/connection",
  enforcementLevel: "mandatory",
  policies,
});
