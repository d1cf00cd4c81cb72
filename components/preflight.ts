/**
 * Looks up what lib/preflight.ts checks, before anything is registered: whether the region has a
 * default VPC, the vCPUs of the instance types and the account's vCPU quotas. A quota that cannot
 * be read (no servicequotas:GetServiceQuota right) is a warning, not a failure.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { Ec2Need, preflightProblems, quotaFor } from "../lib/preflight";
import { Settings, SettingsError } from "../lib/settings";

export function ec2Needs(s: Settings): Ec2Need[] {
  const needs: Ec2Need[] = [];
  const b = s.builder;
  if (b.kind === "ec2" && b.enabled) needs.push({ section: "builder", instanceType: b.instanceType, subnetId: b.subnetId });
  const h = s.host;
  if (h.kind === "ec2") needs.push({ section: "host", instanceType: h.instanceType, subnetId: h.subnetId });
  return needs;
}

export async function preflight(s: Settings): Promise<void> {
  const needs = ec2Needs(s);
  if (needs.length === 0) return;
  const region = aws.config.region ?? "(the default region)";
  const defaultVpc = needs.some((n) => n.subnetId === undefined)
    ? (await aws.ec2.getVpcs({ filters: [{ name: "is-default", values: ["true"] }] })).ids.length > 0
    : undefined;
  const vcpus: Record<string, number> = {};
  for (const type of new Set(needs.map((n) => n.instanceType))) {
    vcpus[type] = (await aws.ec2.getInstanceType({ instanceType: type })).defaultVcpus;
  }
  const quotas: Record<string, number | undefined> = {};
  for (const n of needs) {
    const { code } = quotaFor(n.instanceType);
    if (code in quotas) continue;
    quotas[code] = await aws.servicequotas
      .getServiceQuota({ serviceCode: "ec2", quotaCode: code })
      .then((q) => q.value)
      .catch((e: Error) => {
        pulumi.log.warn(`preflight: cannot read the EC2 quota ${code} (${String(e.message).split("\n")[0]}); not checked`);
        return undefined;
      });
  }
  const problems = preflightProblems(needs, { region, defaultVpc, vcpus, quotas });
  if (problems.length)
    throw new pulumi.RunError(new SettingsError(problems).message.replace("invalid stack configuration", "preflight failed"));
}
