/**
 * scripts/ecr-keep.sh for real: after a successful rollout the EC2 host tags the image it runs
 * `running-<machine>` through the real AWS CLI v2 (Debian's awscli, the CLI AL2023 ships), so the
 * repository's lifecycle rule never expires it. Run as its Command runs it (scriptCommand: the
 * step preamble first, the command line from lib/shell.ts).
 *
 * Stand-in: ECR is tests/support/fakeEcr.ts (the CLI's signed JSON requests; PutImage checks the
 * manifest's digest, moves only running-* tags, and answers ImageAlreadyExists as ECR does). The
 * lifecycle rule itself (which images ECR expires) cannot run here: lib/registry.ts quotes the
 * rule of AWS's documentation it relies on.
 */
import { runningTag } from "../../lib/registry";
import { scriptCommand } from "../../lib/shell";
import { FakeEcr, sha256Digest, startFakeEcr } from "../support/fakeEcr";
import { requireTools, run } from "./support";

jest.setTimeout(60_000);
const AWS = "/usr/bin/aws";
requireTools(["bash", "python3", AWS]);

const ACCOUNT = "123456789012";
const REPO = "neko-infra-dev";
// A manifest ending in a line break: the tag must point at these exact bytes.
const OLD = '{"schemaVersion":2,"layers":[{"digest":"sha256:01"}]}\n';
const NEW = '{\n  "schemaVersion": 2,\n  "layers": [{ "digest": "sha256:02" }]\n}\n';
const TAG = runningTag("host");
const refOf = (manifest: string) => `${ACCOUNT}.dkr.ecr.eu-central-1.amazonaws.com/${REPO}@${sha256Digest(manifest)}`;

let ecr: FakeEcr;
beforeEach(async () => {
  ecr = await startFakeEcr({
    account: ACCOUNT,
    repository: REPO,
    images: [
      { manifest: OLD, tags: ["aaaa", TAG] },
      { manifest: NEW, tags: ["bbbb"] },
    ],
  });
});
afterEach(async () => {
  expect(ecr.violations).toEqual([]);
  await ecr.close();
});

function keep(ref: string, tag = TAG) {
  const sc = scriptCommand({ script: "ecr-keep.sh", args: [ref, tag], env: { ECR_ENDPOINT: ecr.endpoint }, budgetSeconds: 60 });
  return run("/bin/sh", ["-c", sc.command], {
    input: sc.stdin,
    timeoutMs: 50_000,
    env: {
      PATH: "/usr/bin:/bin",
      HOME: "/tmp",
      AWS_ACCESS_KEY_ID: "AKIDEXAMPLE",
      AWS_SECRET_ACCESS_KEY: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_CONFIG_FILE: "/dev/null",
      AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
    },
  });
}
const tagsOf = (manifest: string) => ecr.images.find((i) => i.digest === sha256Digest(manifest))!.tags;

test("the tag moves onto the image the host now runs, pointing at its exact manifest; the old image keeps only its own tag", async () => {
  const r = await keep(refOf(NEW));
  expect(r.code).toBe(0);
  expect(r.stdout).toBe(`${REPO}@${sha256Digest(NEW).slice(0, 19)} is tagged ${TAG}\n`);
  expect(tagsOf(NEW)).toEqual(["bbbb", TAG]);
  expect(tagsOf(OLD)).toEqual(["aaaa"]);
  expect(ecr.calls.map((c) => c.action)).toEqual(["BatchGetImage", "PutImage"]);
  expect(ecr.calls[1].body).toMatchObject({ imageTag: TAG, imageManifest: NEW, imageDigest: sha256Digest(NEW) });
});

test("the same image again: ECR's ImageAlreadyExists is success, said on stderr", async () => {
  const r = await keep(refOf(OLD));
  expect(r.code).toBe(0);
  expect(r.stderr).toContain(`ecr-keep: ${REPO}@${sha256Digest(OLD).slice(0, 19)} carries ${TAG} already`);
  expect(tagsOf(OLD)).toEqual(["aaaa", TAG]);
});

test("the host role may not tag: exit 1 with ECR's error and the fix", async () => {
  ecr.deny("PutImage");
  const r = await keep(refOf(NEW));
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(
    /ecr-keep: tagging .* failed: .*AccessDeniedException.* -- fix: the host role needs ecr:PutImage on neko-infra-dev/,
  );
  expect(tagsOf(OLD)).toEqual(["aaaa", TAG]); // nothing moved
});

test("an immutable tag is refused, not overwritten: exit 1", async () => {
  const r = await keep(refOf(NEW), "aaaa");
  expect(r.code).toBe(1);
  expect(r.stderr).toContain("ImageTagAlreadyExistsException");
  expect(tagsOf(OLD)).toEqual(["aaaa", TAG]);
});

test("an image ECR does not hold: exit 1 naming it, no PutImage", async () => {
  const r = await keep(refOf('{"schemaVersion":2}'));
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/ecr-keep: ECR holds no image neko-infra-dev@sha256:[0-9a-f]{12} \(no such image\)/);
  expect(ecr.calls.map((c) => c.action)).toEqual(["BatchGetImage"]);
});

test("a reference that is not ECR's by digest: exit 2 before any call", async () => {
  const r = await keep(`${ACCOUNT}.dkr.ecr.eu-central-1.amazonaws.com/${REPO}:latest`);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("is not an ECR image reference by digest");
  expect(ecr.calls).toEqual([]);
});
