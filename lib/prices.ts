/**
 * The prices the cost estimate (lib/cost.ts, `npm run cost`) uses: USD, on-demand, Linux, shared
 * tenancy, per region. AWS cannot be reached from CI, so these are not fetched: each table names
 * where its numbers come from and when they were taken, and the estimate prints that date. When AWS
 * changes a price, or a stack uses a region or instance type missing here, edit this file (the
 * estimate refuses to guess and names what is missing).
 */

export interface RegionPrices {
  region: string;
  /** When these numbers were taken from the sources below. */
  asOf: string;
  source: string;
  /** USD per instance-hour. */
  instanceHour: Record<string, number>;
  /** USD per GB-month. */
  gp3GbMonth: number;
  snapshotGbMonth: number;
  s3GbMonth: number;
  ecrGbMonth: number;
  /** USD per hour for each public IPv4 address, attached or not (Elastic IPs included). */
  publicIpv4Hour: number;
}

const SOURCE =
  "AWS's public price pages (aws.amazon.com/ec2/pricing/on-demand, /ebs/pricing, /vpc/pricing for public IPv4, /s3/pricing, " +
  "/ecr/pricing) as the team recorded them; this repository's CI cannot reach AWS to re-check them";

export const PRICES: Record<string, RegionPrices> = {
  "eu-central-1": {
    region: "eu-central-1",
    asOf: "2026-12-03",
    source: SOURCE,
    instanceHour: {
      "c6i.large": 0.097,
      "c6i.xlarge": 0.194,
      "c6i.2xlarge": 0.388,
      "c6i.4xlarge": 0.776,
      "t3.xlarge": 0.192,
      "g4dn.xlarge": 0.658,
      "g5.xlarge": 1.258,
      "g5.2xlarge": 1.515,
    },
    gp3GbMonth: 0.0952,
    snapshotGbMonth: 0.054,
    s3GbMonth: 0.0245,
    ecrGbMonth: 0.1,
    publicIpv4Hour: 0.005,
  },
  "us-east-1": {
    region: "us-east-1",
    asOf: "2026-12-03",
    source: SOURCE,
    instanceHour: {
      "c6i.large": 0.085,
      "c6i.xlarge": 0.17,
      "c6i.2xlarge": 0.34,
      "c6i.4xlarge": 0.68,
      "t3.xlarge": 0.1664,
      "g4dn.xlarge": 0.526,
      "g5.xlarge": 1.006,
      "g5.2xlarge": 1.212,
    },
    gp3GbMonth: 0.08,
    snapshotGbMonth: 0.05,
    s3GbMonth: 0.023,
    ecrGbMonth: 0.1,
    publicIpv4Hour: 0.005,
  },
};

/** Hours in AWS's billing month. */
export const MONTH_HOURS = 730;
