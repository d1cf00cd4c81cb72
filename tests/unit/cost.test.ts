/**
 * lib/cost.ts (the estimate) and tools/cost.js (`npm run cost`): the arithmetic, what it refuses
 * to guess, and that the README's tables are the program's output for the stacks as shipped.
 */
import { execFileSync, spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { CostError, estimate } from "../../lib/cost";
import { PRICES } from "../../lib/prices";
import { parseSettings, Settings } from "../../lib/settings";
import { configOf } from "../support/settings";

const ROOT = path.join(__dirname, "..", "..");
const { tableOf, BLOCK } = require("../../tools/cost.js") as { tableOf(stack: string): string; BLOCK(stack: string): RegExp };

const settings = (builder: object, host: object, registry: object = { kind: "ecr", repository: "neko", keepImages: 4 }): Settings =>
  parseSettings({
    config: configOf({ builder, host, registry, image: { flake: "path:/p", attr: "image" } }),
    secretKeys: [],
    projectDir: "/p",
    fileExists: () => true,
  });
const ec2Builder = { kind: "ec2", instanceType: "c6i.2xlarge", volumeSize: 100, sshCidrs: ["100.64.7.9/32"] };
const ec2Host = {
  kind: "ec2",
  gpu: true,
  instanceType: "g5.xlarge",
  volumeSize: 120,
  sshCidrs: ["100.64.7.9/32"],
  clientCidrs: ["100.64.0.0/16"],
};
const line = (e: ReturnType<typeof estimate>, item: string) => e.lines.find((l) => l.item.startsWith(item));

test("each machine: hours only in use, volumes and its Elastic IP always; totals add up", () => {
  const e = estimate(settings(ec2Builder, ec2Host), "eu-central-1");
  const p = PRICES["eu-central-1"];
  expect(line(e, "host g5.xlarge")).toEqual({ item: "host g5.xlarge", basis: "76 h × $1.258", idle: 0, inUse: 95.66 });
  expect(line(e, "builder c6i.2xlarge")).toMatchObject({ idle: 0, inUse: 3.88 });
  expect(line(e, "host root volume")).toMatchObject({ idle: 11.42, inUse: 11.42 });
  expect(line(e, "browser profile volume")).toMatchObject({ basis: "10 GB × $0.0952" });
  expect(e.lines.filter((l) => l.item.includes("Elastic IP")).map((l) => l.idle)).toEqual([3.65, 3.65]);
  expect(line(e, "ECR (4 images kept)")).toMatchObject({ basis: "4 GB × $0.10", idle: 0.4 });
  const sum = (k: "idle" | "inUse") => e.lines.reduce((s, l) => s + l[k], 0);
  expect(e.idle).toBeCloseTo(sum("idle"), 1);
  expect(e.inUse).toBeCloseTo(sum("inUse"), 1);
  expect(e.inUse - e.idle).toBeCloseTo(76.04 * p.instanceHour["g5.xlarge"] + 10 * p.instanceHour["c6i.2xlarge"], 1);
});

test("a machine that never stops (idleMinutes 0) bills the whole month, idle too; a builder switched off keeps only its address", () => {
  const e = estimate(settings({ ...ec2Builder, enabled: false }, { ...ec2Host, idleMinutes: 0 }), "eu-central-1");
  expect(line(e, "host g5.xlarge")).toMatchObject({ basis: "730 h × $1.258 (never stops)", idle: 918.34, inUse: 918.34 });
  expect(e.lines.filter((l) => l.item.startsWith("builder")).map((l) => l.item)).toEqual([
    "builder Elastic IP (kept while the builder is off)",
  ]);
});

test("machines that are not EC2 cost nothing here, a registry that is not ECR neither", () => {
  const e = estimate(settings({ kind: "local" }, { kind: "local" }, { kind: "docker" }), "eu-central-1");
  expect(e).toEqual({ region: "eu-central-1", lines: [], idle: 0, inUse: 0 }); // no price table needed
});

test("a region or instance type the price table lacks is refused, naming what to add and where", () => {
  expect(() => estimate(settings(ec2Builder, ec2Host), "ap-south-2")).toThrow(
    new CostError("no prices for region ap-south-2 in lib/prices.ts (known: eu-central-1, us-east-1); add its table there"),
  );
  expect(() => estimate(settings(ec2Builder, { ...ec2Host, instanceType: "g6e.xlarge" }), "eu-central-1")).toThrow(
    "no price for g6e.xlarge (host.instanceType) in eu-central-1 in lib/prices.ts; add it there",
  );
});

test("every price table has a date and a source, and prices every instance type the example stacks use", () => {
  for (const p of Object.values(PRICES)) {
    expect(p.asOf).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(p.source).toMatch(/aws\.amazon\.com/);
    for (const type of ["c6i.xlarge", "c6i.2xlarge", "c6i.4xlarge", "g5.xlarge"]) expect(p.instanceHour[type]).toBeGreaterThan(0);
  }
});

/** A Markdown table with its padding taken out (the README is formatted by prettier). */
const squeeze = (s: string) =>
  s
    .trim()
    .split("\n")
    .map((l) => (l.startsWith("|") ? l.split("|").map((c) => c.trim().replace(/^(-+)(:?)$/, "-$2")) : [l]).join("|"))
    .join("\n");

test.each(["dev", "prod"])("the README's %s table is what `npm run cost` prints for Pulumi.%s.yaml", (stack) => {
  const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
  const block = BLOCK(stack).exec(readme);
  expect(block).not.toBeNull();
  expect(squeeze(block![2])).toBe(squeeze(tableOf(stack)));
  expect(tableOf(stack)).toContain(`${stack} in eu-central-1`); // the stacks' own region, not us-east-1
});

test("the command: a table per stack; a missing stack file and a bad flag are errors", () => {
  const cost = (...args: string[]) => spawnSync(process.execPath, [path.join(ROOT, "tools", "cost.js"), ...args], { encoding: "utf8" });
  expect(execFileSync(process.execPath, [path.join(ROOT, "tools", "cost.js"), "prod"], { encoding: "utf8" })).toContain(
    "| **prod total** |",
  );
  // the local stack (no cloud machines): nothing to pay AWS
  const local = cost("local");
  expect([local.status, local.stderr]).toEqual([0, ""]);
  expect(local.stdout.trim()).toBe("local: nothing runs on AWS (its machines are ssh or local, its registry not ECR): $0.00 a month.");
  const missing = cost("nosuchstack");
  expect([missing.status, missing.stderr.trim()]).toEqual([1, "cost: no Pulumi.nosuchstack.yaml here: the stack's settings live there"]);
  expect(cost("--json").status).toBe(2);
  expect(cost().status).toBe(2);
});
