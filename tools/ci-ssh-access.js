// @ts-check
/**
 * SSH for a CI deploy job, for its own duration: hosted runners' addresses are not in any stack's
 * `sshCidrs`, so without this every wake step of a deploy fails.
 *
 *   node tools/ci-ssh-access.js open  STACK --address A.B.C.D [--run ID] [--hours 4]
 *   node tools/ci-ssh-access.js close STACK [--run ID]
 *
 * `open` adds one rule (tcp 22 from ADDRESS/32, or /128) to each of the stack's CI access groups,
 * the security groups tagged `neko-infra:stack=<project>/<STACK>` and `neko-infra:access=ci-ssh`
 * that the program attaches to every EC2 machine and declares without rules (components/
 * ec2Machine.ts): a rule here is never drift, not even with --refresh. The rule's description names
 * the run and when it expires: `neko-infra CI run <ID> until <UTC time>`.
 * `close` removes this run's rules, and rules of other runs whose time is up (a job killed before
 * its cleanup step), never a live rule of another run. Both print one line per group; close after
 * a failed or cancelled deploy is the workflow's `if: always()` step.
 *
 * Env: AWS_REGION (or AWS_DEFAULT_REGION), the SDK's usual credentials, AWS_ENDPOINT_URL_EC2 (tests),
 * GITHUB_RUN_ID / GITHUB_RUN_ATTEMPT (the default --run). Exit 0 done, 1 failed, 2 usage.
 */
"use strict";
const fs = require("fs");
const path = require("path");

const PREFIX = "neko-infra CI run ";
const LINE_MAX = 300;

/** @param {string} s */
const cap = (s) => (s.length > LINE_MAX ? `${s.slice(0, LINE_MAX - 1)}…` : s);

/** The rule description for a run. @param {string} run @param {Date} until */
function description(run, until) {
  return `${PREFIX}${run} until ${until.toISOString().replace(/\.\d{3}Z$/, "Z")}`;
}

/**
 * Whose a rule is, from its description: this tool's (run, until) or undefined (someone else's).
 * @param {string | undefined} d @returns {{ run: string, until: Date } | undefined}
 */
function owner(d) {
  const m = /^neko-infra CI run (\S+) until (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$/.exec(d ?? "");
  return m ? { run: m[1], until: new Date(m[2]) } : undefined;
}

/**
 * Which of a group's rules `close` (or `open`, before it adds its own) removes: this run's, and
 * expired ones of this tool. Rules without the tool's description are never touched.
 * @param {{ id: string, description?: string }[]} rules @param {string | undefined} run @param {Date} now
 */
function removable(rules, run, now) {
  return rules.filter((r) => {
    const o = owner(r.description);
    return o !== undefined && (o.run === run || o.until.getTime() <= now.getTime());
  });
}

/** ADDRESS as a single-address CIDR, or an error. @param {string | undefined} a */
function hostCidr(a) {
  if (a && /^\d{1,3}(\.\d{1,3}){3}$/.test(a) && a.split(".").every((x) => Number(x) <= 255)) return `${a}/32`;
  if (a && /^[0-9a-fA-F:]+$/.test(a) && a.includes(":")) return `${a}/128`;
  throw new Usage(`--address must be this runner's public IPv4 or IPv6 address, got ${JSON.stringify(a ?? "")}`);
}

class Usage extends Error {}

/** The Pulumi project's name (Pulumi.yaml's `name:`), which the stack tag starts with. @param {string} dir */
function projectName(dir) {
  const text = fs.readFileSync(path.join(dir, "Pulumi.yaml"), "utf8");
  const m = /^name:\s*["']?([^"'\s#]+)/m.exec(text);
  if (!m) throw new Error(`no name: in ${path.join(dir, "Pulumi.yaml")}`);
  return m[1];
}

/**
 * @param {{ verb: string, stack: string, address?: string, run?: string, hours: number,
 *   project: string, client: import("@aws-sdk/client-ec2").EC2Client, now?: Date,
 *   log: (line: string) => void }} o
 * @returns {Promise<number>} the exit status
 */
async function main(o) {
  const ec2 = require("@aws-sdk/client-ec2");
  const now = o.now ?? new Date();
  const stackTag = `${o.project}/${o.stack}`;
  const found = await o.client.send(
    new ec2.DescribeSecurityGroupsCommand({
      Filters: [
        { Name: "tag:neko-infra:stack", Values: [stackTag] },
        { Name: "tag:neko-infra:access", Values: ["ci-ssh"] },
      ],
    }),
  );
  const groups = (found.SecurityGroups ?? []).map((g) => g.GroupId ?? "").filter(Boolean);
  if (groups.length === 0) {
    const what = `no security group tagged neko-infra:stack=${stackTag}, neko-infra:access=ci-ssh`;
    if (o.verb === "close") return (o.log(`ci-ssh-access: ${what}: nothing to close`), 0);
    // A stack with no EC2 machine needs no SSH from CI; one whose machines predate the group does.
    o.log(`ci-ssh-access: ${what}: no EC2 machine of ${o.stack} to open SSH on (or they predate the CI access group:`);
    o.log(`ci-ssh-access:   a deploy from a machine in sshCidrs adds it: npm run up -- ${o.stack})`);
    return 0;
  }
  const cidr = o.verb === "open" ? hostCidr(o.address) : undefined;
  for (const id of groups) {
    const rules = await o.client.send(new ec2.DescribeSecurityGroupRulesCommand({ Filters: [{ Name: "group-id", Values: [id] }] }));
    const ingress = (rules.SecurityGroupRules ?? [])
      .filter((r) => !r.IsEgress)
      .map((r) => ({ id: r.SecurityGroupRuleId ?? "", description: r.Description, cidr: r.CidrIpv4 ?? r.CidrIpv6 ?? "" }));
    const gone = removable(ingress, o.verb === "close" ? o.run : undefined, now);
    if (gone.length) {
      await revoke(
        ec2,
        o.client,
        id,
        gone.map((r) => r.id),
      );
      const runs = gone.map(
        (r) => `${r.cidr} (${owner(r.description)?.run === o.run ? "this run" : `run ${owner(r.description)?.run}, expired`})`,
      );
      o.log(cap(`ci-ssh-access: ${id}: removed ${runs.join(", ")}`));
    } else if (o.verb === "close") {
      o.log(`ci-ssh-access: ${id}: no rule of run ${o.run} (nothing to remove)`);
    }
    if (o.verb !== "open") continue;
    const until = new Date(now.getTime() + o.hours * 3600_000);
    const range = { Description: description(o.run ?? "", until) };
    const permission = {
      IpProtocol: "tcp",
      FromPort: 22,
      ToPort: 22,
      ...(cidr?.includes(":") ? { Ipv6Ranges: [{ ...range, CidrIpv6: cidr }] } : { IpRanges: [{ ...range, CidrIp: cidr }] }),
    };
    try {
      await o.client.send(new ec2.AuthorizeSecurityGroupIngressCommand({ GroupId: id, IpPermissions: [permission] }));
      o.log(`ci-ssh-access: ${id}: SSH open for ${cidr} until ${until.toISOString().replace(/\.\d{3}Z$/, "Z")} (run ${o.run})`);
    } catch (e) {
      if (/** @type {{ name?: string }} */ (e).name !== "InvalidPermission.Duplicate") throw e;
      // Another live run from this same address holds the rule: it stays theirs, and removing it is theirs.
      const holder = ingress.find((r) => r.cidr === cidr);
      o.log(
        cap(`ci-ssh-access: ${id}: SSH already open for ${cidr} (${holder?.description ?? "a rule not made by this tool"}): left as it is`),
      );
    }
  }
  return 0;
}

/**
 * Revokes rules by id; one already gone (another run's close got there first) is no failure.
 * @param {typeof import("@aws-sdk/client-ec2")} ec2 @param {import("@aws-sdk/client-ec2").EC2Client} client
 * @param {string} group @param {string[]} ids
 */
async function revoke(ec2, client, group, ids) {
  for (const id of ids) {
    try {
      await client.send(new ec2.RevokeSecurityGroupIngressCommand({ GroupId: group, SecurityGroupRuleIds: [id] }));
    } catch (e) {
      if (/** @type {{ name?: string }} */ (e).name !== "InvalidSecurityGroupRuleId.NotFound") throw e;
    }
  }
}

/** @param {string[]} argv */
function parseArgs(argv) {
  const [verb, stack, ...rest] = argv;
  /** @type {Record<string, string>} */
  const flags = {};
  for (let i = 0; i < rest.length; i += 2) {
    if (!/^--(address|run|hours)$/.test(rest[i]) || rest[i + 1] === undefined) throw new Usage(`unknown or incomplete option ${rest[i]}`);
    flags[rest[i].slice(2)] = rest[i + 1];
  }
  if ((verb !== "open" && verb !== "close") || !stack || !/^[\w.-]+$/.test(stack)) throw new Usage("open|close STACK expected");
  const run =
    flags.run ?? (process.env.GITHUB_RUN_ID ? `${process.env.GITHUB_RUN_ID}-${process.env.GITHUB_RUN_ATTEMPT ?? "1"}` : undefined);
  if (!run || !/^[\w.-]{1,64}$/.test(run))
    throw new Usage("--run ID (letters, digits, . _ -) or GITHUB_RUN_ID is needed: it names this run's rules");
  const hours = Number(flags.hours ?? "4");
  if (!(hours > 0 && hours <= 24)) throw new Usage("--hours must be within (0, 24]");
  return { verb, stack, address: flags.address, run, hours };
}

module.exports = { main, description, owner, removable, hostCidr, parseArgs, Usage };

if (require.main === module) {
  const log = (/** @type {string} */ l) => process.stdout.write(`${cap(l)}\n`);
  (async () => {
    let args;
    try {
      args = parseArgs(process.argv.slice(2));
      if (args.verb === "open") hostCidr(args.address);
    } catch (e) {
      if (!(e instanceof Usage)) throw e;
      process.stderr.write(
        `ci-ssh-access: ${e.message}\nusage: node tools/ci-ssh-access.js open STACK --address IP [--run ID] [--hours H] | close STACK [--run ID]\n`,
      );
      return 2;
    }
    const { EC2Client } = require("@aws-sdk/client-ec2");
    const region = process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION;
    if (!region) {
      process.stderr.write("ci-ssh-access: no AWS region: set AWS_REGION (configure-aws-credentials does)\n");
      return 1;
    }
    const client = new EC2Client({ region, maxAttempts: 3 });
    try {
      return await main({ ...args, project: projectName(path.join(__dirname, "..")), client, log });
    } catch (e) {
      const err = /** @type {{ name?: string, message?: string }} */ (e);
      process.stderr.write(cap(`ci-ssh-access: ${args.verb} ${args.stack} failed: ${err.name}: ${err.message}`) + "\n");
      if (/AccessDenied|UnauthorizedOperation/.test(String(err.name)))
        process.stderr.write("ci-ssh-access: the CI role needs the EC2 statements in README (CI: SSH for deploys)\n");
      return 1;
    }
  })().then((code) => process.exit(code));
}
