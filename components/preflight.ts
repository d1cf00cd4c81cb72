/**
 * Looks up what lib/preflight.ts checks, before anything is registered: whether the region has a
 * default VPC, the vCPUs of the instance types and the account's vCPU quotas. A quota that cannot
 * be read (no servicequotas:GetServiceQuota right) is a warning, not a failure.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { Ec2Need, preflightProblems, quotaFor, quotaOf, runningByQuota } from "../lib/preflight";
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
  // Listing the account's instances only matters for a quota that could be read.
  const anyQuota = Object.values(quotas).some((q) => q !== undefined);
  const running = anyQuota ? await othersRunning(`${pulumi.getProject()}/${pulumi.getStack()}`, vcpus) : undefined;
  const problems = preflightProblems(needs, { region, defaultVpc, vcpus, quotas, running });
  if (problems.length)
    throw new pulumi.RunError(new SettingsError(problems).message.replace("invalid stack configuration", "preflight failed"));
}

/** Beyond this many running instances the account is not listed one by one (a warning says so). */
const MAX_LISTED = 100;

/**
 * vCPUs by quota that the account's other running instances use (this stack's own are its needs),
 * filling in `vcpus` for their types; undefined (a warning) when they cannot be listed.
 */
async function othersRunning(stackTag: string, vcpus: Record<string, number>): Promise<Record<string, number> | undefined> {
  try {
    const { ids } = await aws.ec2.getInstances({ instanceStateNames: ["pending", "running"] });
    if (ids.length > MAX_LISTED) {
      pulumi.log.warn(`preflight: ${ids.length} instances run in this account; the vCPUs they use are not counted against the quotas`);
      return undefined;
    }
    // Asked all at once: this runs before every preview, and one by one it would add a round trip
    // to AWS per instance.
    const instances = await Promise.all(ids.map((id) => aws.ec2.getInstance({ instanceId: id })));
    const types = instances.filter((i) => i.tags?.["neko-infra:stack"] !== stackTag).map((i) => i.instanceType);
    const unknown = [...new Set(types)].filter((t) => !(t in vcpus) && quotaOf(t));
    const counts = await Promise.all(unknown.map((t) => aws.ec2.getInstanceType({ instanceType: t })));
    unknown.forEach((t, n) => (vcpus[t] = counts[n].defaultVcpus));
    return runningByQuota(types, vcpus);
  } catch (e) {
    pulumi.log.warn(
      `preflight: cannot list the running instances (${String((e as Error).message).split("\n")[0]}); their vCPUs are not counted`,
    );
    return undefined;
  }
}
