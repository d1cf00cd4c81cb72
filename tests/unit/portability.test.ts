/**
 * The scripts that run on an operator's machine (a Mac: bash 3.2, BSD tools) use nothing a Mac
 * lacks. The static half of that promise; tests/realtool/bash32.test.ts runs them under the real
 * bash 3.2 with a PATH that has no GNU-only tools.
 */
import * as fs from "fs";
import * as path from "path";
import { portabilityFindings } from "../support/portability";

const ROOT = path.join(__dirname, "..", "..");

/** Every script that can run on the operator's machine: local steps (a local builder or host) and the npm run wrappers. */
export const OPERATOR_SCRIPTS = [
  "scripts/step-preamble.sh",
  "scripts/ship-flake.sh",
  "scripts/nix-build.sh",
  "scripts/push-image.sh",
  "scripts/docker-load.sh",
  "scripts/neko-rollout.sh",
  "scripts/neko-check-lib.sh",
  "scripts/neko-lib.sh",
  "tools/up.sh",
  "tools/builder-toggle.sh",
  "tools/ssh.sh",
  "tools/doctor.sh",
  "scripts/neko-status.sh",
  "tools/pulumi-offline.sh",
];

test.each(OPERATOR_SCRIPTS)("%s: no bash 4 construct, no unguarded GNU-only tool or option, no unguarded empty-array expansion", (file) => {
  const findings = portabilityFindings(fs.readFileSync(path.join(ROOT, file), "utf8"));
  expect(findings.map((f) => `${file}:${f.line}: ${f.what}: ${f.text}`)).toEqual([]);
});

test("the check finds what a Mac breaks on", () => {
  const bad = [
    "#!/usr/bin/env bash",
    "declare -A seen",
    "name=${1,,}",
    "mapfile -t lines <f",
    "timeout 5 curl x",
    "sha256sum f | cut -c1-64",
    "stat -c %Y f",
    "sed -i 's/a/b/' f",
    "args=()",
    'docker run "${args[@]}"',
    'echo "${!x}" # ok: indirection is bash 2',
  ].join("\n");
  expect(portabilityFindings(bad).map((f) => f.line)).toEqual([2, 3, 4, 5, 6, 7, 8, 10]);
});

test("what bash 3.2 and a Mac have passes: guarded tools, guarded or non-empty arrays, comments", () => {
  const good = [
    "#!/usr/bin/env bash",
    "if command -v timeout >/dev/null 2>&1; then timeout 5 x; else x; fi",
    "opts=(--a b)",
    'run "${opts[@]}"',
    "more=()",
    'run ${more[@]+"${more[@]}"}',
    "# sha256sum and timeout are fine in a comment",
    "sed -i.bak 's/a/b/' f",
  ].join("\n");
  expect(portabilityFindings(good)).toEqual([]);
});
