/**
 * scripts/host-ready.sh for real: the host tells the wake link that neko answers, by tagging its
 * own instance neko-infra:ready=<epoch> through the real AWS CLI v2 (Debian's awscli, the CLI
 * AL2023 ships) once neko's /health answers.
 *
 * Stand-ins (the real services are not reachable here): EC2 is tests/support/fakeEc2.ts (the
 * CLI's signed query-protocol request must pass its checks: action, parameters, Version, SigV4
 * header); the instance metadata service is a small server on 127.0.0.1 that, like IMDSv2,
 * answers metadata only with a session token from `PUT /latest/api/token`; neko's /health is a
 * server that answers 503 until the test lets it answer 200. The CLI gets static credentials in
 * its environment (on EC2 it takes the role's from the metadata service) and never looks further
 * (AWS_EC2_METADATA_DISABLED).
 */
import * as fs from "fs";
import * as http from "http";
import { AddressInfo } from "net";
import * as os from "os";
import * as path from "path";
import { startFakeEc2, FakeEc2 } from "../support/fakeEc2";
import { requireTools, run, SCRIPTS } from "./support";

jest.setTimeout(60_000);
const AWS = "/usr/bin/aws";
requireTools(["bash", "curl", AWS]);

const ID = "i-0aaaabbbbccccdddd";
const SCRIPT = path.join(SCRIPTS, "host-ready.sh");

interface Server {
  url: string;
  paths: string[];
  close(): Promise<void>;
}
async function serve(handler: http.RequestListener): Promise<Server> {
  const paths: string[] = [];
  const server = http.createServer((req, res) => (paths.push(`${req.method} ${req.url}`), handler(req, res)));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    paths,
    close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  };
}

/** IMDSv2: a token from PUT (with a TTL header), then metadata only with that token. */
const imdsHandler: http.RequestListener = (req, res) => {
  if (imdsRefusals > 0) return void (imdsRefusals--, res.writeHead(503).end());
  if (req.method === "PUT" && req.url === "/latest/api/token" && req.headers["x-aws-ec2-metadata-token-ttl-seconds"])
    return void res.end("tok-123");
  if (req.headers["x-aws-ec2-metadata-token"] !== "tok-123") return void res.writeHead(401).end();
  const values: Record<string, string> = { "/latest/meta-data/instance-id": ID, "/latest/meta-data/placement/region": "eu-central-1" };
  if (values[req.url ?? ""] === undefined) return void res.writeHead(404).end();
  res.end(values[req.url ?? ""]);
};

let ec2: FakeEc2;
let imds: Server;
let neko: Server;
let nekoUp = false;
/** How many more requests the metadata service answers 503 (as when asked too early). */
let imdsRefusals = 0;
let stateDir = "";

beforeAll(async () => {
  const version = await run(AWS, ["--version"], { env: { PATH: "/usr/bin:/bin" } });
  expect(version.stdout + version.stderr).toMatch(/^aws-cli\/2\./);
  imds = await serve(imdsHandler);
  neko = await serve((req, res) => void res.writeHead(req.url === "/health" && nekoUp ? 200 : 503).end(nekoUp ? "true" : "starting"));
});
afterAll(async () => {
  await imds?.close();
  await neko?.close();
});
beforeEach(async () => {
  ec2 = await startFakeEc2({ instances: { [ID]: { state: "running", tags: { Name: "neko-host" } } }, allow: ["CreateTags"] });
  stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "host-ready-"));
  fs.writeFileSync(path.join(stateDir, "neko-url"), `${neko.url}/\n`);
  nekoUp = false;
  imdsRefusals = 0;
});
afterEach(async () => {
  expect(ec2.violations).toEqual([]);
  await ec2.close();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

const ready = (budget: string, env: Record<string, string> = {}) =>
  run("bash", [SCRIPT, budget], {
    timeoutMs: 50_000,
    env: {
      PATH: "/usr/bin:/bin:/usr/sbin:/sbin",
      HOME: stateDir,
      NEKO_STATE_DIR: stateDir,
      IMDS_ENDPOINT: imds.url,
      EC2_ENDPOINT: ec2.endpoint,
      AWS_ACCESS_KEY_ID: "AKIDEXAMPLE",
      AWS_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_CONFIG_FILE: "/dev/null",
      AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
      ...env,
    },
  });

test("waits for neko's /health, then tags its own instance ready with the time (IMDSv2 token, the CLI's signed CreateTags)", async () => {
  const started = Math.floor(Date.now() / 1000);
  const pending = ready("40");
  await new Promise((r) => setTimeout(r, 3000));
  expect(ec2.calls).toEqual([]); // nothing while neko does not answer
  nekoUp = true;
  const r = await pending;
  expect(r.code).toBe(0);
  expect(r.stderr).toMatch(new RegExp(`host-ready: neko answers at .*/health: tagged ${ID} neko-infra:ready=\\d+`));
  expect(ec2.calls).toEqual([
    {
      action: "CreateTags",
      params: { "ResourceId.1": ID, "Tag.1.Key": "neko-infra:ready", "Tag.1.Value": expect.stringMatching(/^\d+$/) },
    },
  ]);
  const at = Number(ec2.instances[ID].tags?.["neko-infra:ready"]);
  expect(at).toBeGreaterThanOrEqual(started + 2);
  expect(at).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
  expect(ec2.instances[ID].tags?.Name).toBe("neko-host"); // no other tag touched
  expect(imds.paths).toContain("PUT /latest/api/token");
});

test("neko never answers within the budget: exit 1 naming the cause, nothing tagged", async () => {
  const r = await ready("3");
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/neko did not answer http:\/\/127\.0\.0\.1:\d+\/health within 3s: see journalctl -u neko-restore/);
  expect(ec2.calls).toEqual([]);
});

test("never deployed (no neko-url): exit 1 saying so", async () => {
  fs.rmSync(path.join(stateDir, "neko-url"));
  const r = await ready("2");
  expect(r.code).toBe(1);
  expect(r.stderr).toContain("neko was never deployed here (run pulumi up)");
});

test("EC2 refuses the tag (the role lacks the right): exit 1 with the CLI's error and the fix", async () => {
  nekoUp = true;
  ec2.failNext("CreateTags", "UnauthorizedOperation", "You are not authorized to perform this operation.");
  const r = await ready("10");
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/tagging i-0aaaabbbbccccdddd neko-infra:ready failed: .*UnauthorizedOperation/);
  expect(r.stderr).toContain("the host role needs ec2:CreateTags on this instance for the tag key neko-infra:ready");
});

test("the metadata service never answers: exit 1 after IMDS_WAIT_SECONDS, naming what visitors see and the fix; no AWS call", async () => {
  const r = await ready("2", { IMDS_ENDPOINT: "http://127.0.0.1:9", IMDS_WAIT_SECONDS: "3" });
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/host-ready: the instance metadata service at http:\/\/127\.0\.0\.1:9 did not answer within 3s \(curl: \(7\)/);
  expect(r.stderr).toContain('visitors see "neko did not come up" after 15 minutes');
  expect(r.stderr).toContain("fix: the instance needs its metadata endpoint enabled with IMDSv2");
  expect(r.seconds).toBeLessThan(15);
  expect(ec2.calls).toEqual([]);
});

test("the metadata service answers late (early in a boot): asked again until it does, then tagged", async () => {
  nekoUp = true;
  imdsRefusals = 2;
  const r = await ready("10");
  expect(r.code).toBe(0);
  expect(r.stderr).toMatch(/tagged i-0aaaabbbbccccdddd neko-infra:ready=\d+/);
  expect(imds.paths.filter((p) => p === "PUT /latest/api/token").length).toBeGreaterThanOrEqual(3);
});
