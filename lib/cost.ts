/**
 * What a stack costs a month on AWS, idle (everything asleep) and in use (the usage below), from
 * its settings and the price table in lib/prices.ts. Pure: `npm run cost -- <stack>` (tools/cost.js)
 * prints it, and the README's tables are this output (a test compares them).
 *
 * Counted: each EC2 instance's hours, its encrypted gp3 root volume, the host's profile volume (and
 * its TLS certificates volume), one
 * public IPv4 address per machine (its Elastic IP, billed attached or not), the S3 binary cache and
 * the ECR repository. Not counted (cents): Lambda requests and logs, data transfer, the snapshot
 * `destroy` leaves. ssh and local machines cost nothing here.
 */
import { TLS_VOLUME_GB } from "./caddy";
import { MONTH_HOURS, PRICES, RegionPrices } from "./prices";
import { Settings } from "./settings";

export interface Usage {
  /** Hours a day the host runs, idle stop included (default 2.5: two hours of use, then the stop). */
  hostHoursPerDay: number;
  /** Hours a month the builder runs (default 10: a few builds a week, each followed by its idle stop). */
  builderHoursPerMonth: number;
  /** GB in the S3 binary cache (default 20). */
  cacheGb: number;
  /** GB of distinct layers per image kept in ECR (Nix layered images share most layers; default 0.5), plus 2 GB of shared ones. */
  imageGb: number;
}

export const DEFAULT_USAGE: Usage = { hostHoursPerDay: 2.5, builderHoursPerMonth: 10, cacheGb: 20, imageGb: 0.5 };

export interface CostLine {
  item: string;
  /** How the number is made, e.g. "76 h × $1.258". */
  basis: string;
  idle: number;
  inUse: number;
}

export interface Estimate {
  region: string;
  /** Undefined when nothing runs on AWS (ssh and local machines, no ECR). */
  prices?: RegionPrices;
  lines: CostLine[];
  idle: number;
  inUse: number;
}

export class CostError extends Error {}

/** A rate as the price table has it, at least to the cent: $0.0952, $0.388, $0.10. */
const usd = (n: number) => `$${n.toFixed(Math.max(2, (String(n).split(".")[1] ?? "").length))}`;
const round = (n: number) => Math.round(n * 100) / 100;

export function estimate(s: Settings, region: string, usage: Usage = DEFAULT_USAGE): Estimate {
  const onAws = s.builder.kind === "ec2" || s.host.kind === "ec2" || s.registry.kind === "ecr";
  if (!onAws) return { region, lines: [], idle: 0, inUse: 0 };
  const p = PRICES[region];
  if (!p)
    throw new CostError(`no prices for region ${region} in lib/prices.ts (known: ${Object.keys(PRICES).join(", ")}); add its table there`);
  const lines: CostLine[] = [];
  const rate = (type: string, key: string) => {
    const r = p.instanceHour[type];
    if (r === undefined) throw new CostError(`no price for ${type} (${key}) in ${region} in lib/prices.ts; add it there`);
    return r;
  };
  const compute = (item: string, type: string, key: string, idleMinutes: number, hoursInUse: number) => {
    const r = rate(type, key);
    // A machine that never stops runs the whole month, idle or not.
    const hours = idleMinutes === 0 ? MONTH_HOURS : Math.min(MONTH_HOURS, hoursInUse);
    lines.push({
      item,
      basis: `${Math.round(hours)} h × ${usd(r)}${idleMinutes === 0 ? " (never stops)" : ""}`,
      idle: idleMinutes === 0 ? MONTH_HOURS * r : 0,
      inUse: hours * r,
    });
  };
  const storage = (item: string, gb: number, perGb: number) =>
    lines.push({ item, basis: `${round(gb)} GB × ${usd(perGb)}`, idle: gb * perGb, inUse: gb * perGb });
  const ipv4 = (item: string) => {
    const m = MONTH_HOURS * p.publicIpv4Hour;
    lines.push({ item, basis: `${MONTH_HOURS} h × ${usd(p.publicIpv4Hour)}`, idle: m, inUse: m });
  };

  const b = s.builder;
  if (b.kind === "ec2") {
    if (b.enabled) {
      compute(`builder ${b.instanceType}`, b.instanceType, "builder.instanceType", b.idleMinutes, usage.builderHoursPerMonth);
      storage("builder root volume (gp3)", b.volumeSize, p.gp3GbMonth);
    }
    ipv4(b.enabled ? "builder Elastic IP" : "builder Elastic IP (kept while the builder is off)");
    if (b.cache) storage("S3 binary cache", usage.cacheGb, p.s3GbMonth);
  }
  const h = s.host;
  if (h.kind === "ec2") {
    compute(`host ${h.instanceType}`, h.instanceType, "host.instanceType", h.idleMinutes, (usage.hostHoursPerDay * MONTH_HOURS) / 24);
    storage("host root volume (gp3)", h.volumeSize, p.gp3GbMonth);
    storage("browser profile volume (gp3)", h.profileSize, p.gp3GbMonth);
    if (h.tlsFront.enabled) storage("TLS certificates volume (gp3)", TLS_VOLUME_GB, p.gp3GbMonth);
    ipv4("host Elastic IP");
  }
  if (s.registry.kind === "ecr")
    storage(`ECR (${s.registry.keepImages} images kept)`, 2 + usage.imageGb * s.registry.keepImages, p.ecrGbMonth);

  const total = (k: "idle" | "inUse") => round(lines.reduce((sum, l) => sum + l[k], 0));
  return {
    region,
    prices: p,
    lines: lines.map((l) => ({ ...l, idle: round(l.idle), inUse: round(l.inUse) })),
    idle: total("idle"),
    inUse: total("inUse"),
  };
}

/** The estimate as a Markdown table (what the README holds), with a line saying what it assumes. */
export function costTable(stack: string, e: Estimate, usage: Usage = DEFAULT_USAGE): string {
  if (!e.prices) return `${stack}: nothing runs on AWS (its machines are ssh or local, its registry not ECR): $0.00 a month.`;
  const money = (n: number) => `$${n.toFixed(2)}`;
  const rows = [
    "| item | basis | idle / month | in use / month |",
    "| ---- | ----- | -----------: | -------------: |",
    ...e.lines.map((l) => `| ${l.item} | ${l.basis} | ${money(l.idle)} | ${money(l.inUse)} |`),
    `| **${stack} total** | | **${money(e.idle)}** | **${money(e.inUse)}** |`,
  ];
  return [
    ...rows,
    "",
    `${stack} in ${e.region}, USD, on-demand prices as of ${e.prices.asOf} (lib/prices.ts). In use: the host ${usage.hostHoursPerDay} h a day, ` +
      `the builder ${usage.builderHoursPerMonth} h a month; idle: everything asleep. Not counted: Lambda, logs, data transfer.`,
  ].join("\n");
}
