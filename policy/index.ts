/**
 * The `neko-infra` policy pack: the project's security and cost rules, all mandatory.
 *
 *   pulumi preview --stack prod --policy-pack policy --policy-pack-config policy/config/prod.json
 *
 * Rules: policy/rules.ts; the policies serving them: policy/policies.ts; per-stack allowances:
 * policy/config/<stack>.json. Dependencies come from the repository's node_modules (`npm ci` at the
 * root); the version reported to Pulumi is policy/package.json's.
 */
import { PolicyPack } from "@pulumi/policy";
import { policies } from "./policies";
import { installSecretPaths } from "./secrets";

// Before the pack serves: lets container-passwords-secret see which inputs are secrets.
installSecretPaths();

new PolicyPack("neko-infra", {
  description:
    "neko-infra: IMDSv2, encrypted volumes, no SSH or neko ports open to the world unless allowed, hardened ECR, scoped ECR IAM, GPU wiring, secret passwords",
  enforcementLevel: "mandatory",
  policies,
});
