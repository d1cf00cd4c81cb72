/**
 * Checks before anything is created, from facts the program looks up in the AWS account (see
 * components/preflight.ts): a VPC to launch into, and vCPU quota for the instance types. Pure:
 * facts in, problems out, each naming the setting to change and how to fix the account.
 */
import { instanceFamily } from "./instanceTypes";
import { keyOf } from "./settingsMessages";

export interface Ec2Need {
  /** `builder` or `host`: the settings section. */
  section: "builder" | "host";
  instanceType: string;
  subnetId?: string;
}

export interface Quota {
  code: string;
  name: string;
}

/**
 * EC2's on-demand vCPU quota that an instance type counts against: G and VT families (g4dn, g5,
 * g6e, gr6, vt1, ...) share one, the standard families (A, C, D, H, I, M, R, T, Z) another.
 */
export function quotaFor(instanceType: string): Quota {
  return quotaOf(instanceType) ?? STANDARD;
}

const GPU: Quota = { code: "L-DB2E81BA", name: "Running On-Demand G and VT instances" };
const STANDARD: Quota = { code: "L-1216C47A", name: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances" };

/**
 * The quota an instance type counts against, of the two above; undefined for families with quotas
 * of their own (P, X, F, Inf, Trn, DL, HPC, Mac, ...), which the builder and host never use.
 */
export function quotaOf(instanceType: string): Quota | undefined {
  const family = instanceFamily(instanceType);
  if (/^(g[a-z]*|vt)\d/.test(family)) return GPU;
  if (/^(inf|trn|dl|hpc|mac)/.test(family)) return undefined;
  return /^[acdhimrtz][a-z]*\d/.test(family) ? STANDARD : undefined;
}

export interface PreflightFacts {
  region: string;
  /** Whether the region has a default VPC (looked up only when a machine has no subnet). */
  defaultVpc?: boolean;
  /** vCPUs per instance type. */
  vcpus: Record<string, number>;
  /** Quota values by code; undefined when it could not be read (then it is not checked). */
  quotas: Record<string, number | undefined>;
  /**
   * vCPUs that other instances of the account (not this stack's) already run, by quota code;
   * missing when they could not be listed (then only this stack's needs are counted).
   */
  running?: Record<string, number>;
}

/** vCPUs by quota code of the running instances given (type per instance), from the vCPUs per type. */
export function runningByQuota(types: string[], vcpus: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of types) {
    const q = quotaOf(t);
    if (q) out[q.code] = (out[q.code] ?? 0) + (vcpus[t] ?? 0);
  }
  return out;
}

export function preflightProblems(needs: Ec2Need[], facts: PreflightFacts): string[] {
  const problems: string[] = [];
  const withoutSubnet = needs.filter((n) => n.subnetId === undefined);
  if (withoutSubnet.length && facts.defaultVpc === false) {
    for (const n of withoutSubnet) {
      problems.push(
        `${keyOf(`${n.section}.subnetId`)}: ${facts.region} has no default VPC to launch the ${n.section} into; create one (aws ec2 create-default-vpc --region ${facts.region}) or set ${n.section}.subnetId to a public subnet of yours`,
      );
    }
  }
  // Machines counting against the same quota add up.
  const byQuota = new Map<string, { quota: Quota; needs: Ec2Need[] }>();
  for (const n of needs) {
    const quota = quotaFor(n.instanceType);
    const entry = byQuota.get(quota.code) ?? { quota, needs: [] };
    entry.needs.push(n);
    byQuota.set(quota.code, entry);
  }
  for (const { quota, needs: users } of byQuota.values()) {
    const limit = facts.quotas[quota.code];
    if (limit === undefined) continue;
    const wanted = users.reduce((sum, n) => sum + (facts.vcpus[n.instanceType] ?? 0), 0);
    const others = facts.running?.[quota.code] ?? 0;
    if (wanted + others <= limit) continue;
    const who = users.map((n) => `${n.section} ${n.instanceType} (${facts.vcpus[n.instanceType]} vCPUs)`).join(" + ");
    const besides = others ? `, besides the ${others} vCPUs other instances of the account already run,` : "";
    problems.push(
      `${keyOf(`${users[0].section}.instanceType`)}: ${who} need${users.length === 1 ? "s" : ""} ${wanted} vCPUs${besides} of the EC2 quota "${quota.name}" (${quota.code}), which is ${limit} in ${facts.region}` +
        ` (new accounts often start at 0); ask for more: aws service-quotas request-service-quota-increase --service-code ec2 --quota-code ${quota.code} --desired-value ${wanted + others} --region ${facts.region}` +
        ` (or in the Service Quotas console), ${others ? "stop other instances, " : ""}or choose a smaller type`,
    );
  }
  return problems;
}
