/**
 * The readable part of a step's specification, for previews. A step's environment travels on its
 * standard input, which holds secrets and is therefore shown as one `[secret]`; so the non-secret
 * values are also written under the command line, as shell comment lines that change nothing when
 * it runs. `pulumi preview --diff` then shows a change as a line diff:
 *
 *       - #   NEKO_DESKTOP_SCREEN=1920x1080@30
 *       + #   NEKO_DESKTOP_SCREEN=2560x1440@30
 *
 * Secret values never come here: a secret is listed by its name only (`NAME (secret)`).
 */
import * as crypto from "crypto";

export interface ShownSpec {
  /** What the block is, e.g. "neko's container". */
  title: string;
  /** Non-secret values, shown as they are (a value of several lines: one comment line each). */
  values: Record<string, string>;
  /** Names of secret values, shown as `NAME (secret)`. */
  secretNames?: string[];
}

/** The comment block to put under a command line: starts with a newline; "" without a spec. */
export function specComment(spec: ShownSpec | undefined): string {
  if (!spec) return "";
  const lines = [`# ${oneLine(spec.title)} (not secret; secrets travel on standard input):`];
  for (const [name, value] of Object.entries(spec.values).sort(([a], [b]) => a.localeCompare(b))) {
    const parts = value.split(/\r?\n/).filter((l) => l !== "");
    if (parts.length <= 1) lines.push(`#   ${name}=${oneLine(parts[0] ?? "")}`);
    else for (const part of parts) lines.push(`#   ${name}: ${oneLine(part)}`);
  }
  for (const name of [...(spec.secretNames ?? [])].sort()) lines.push(`#   ${name} (secret)`);
  return `\n${lines.join("\n")}`;
}

/** No line breaks in a comment line (they would end it and run what follows). */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ");
}

/**
 * The SHA-256 of a step's non-secret values, which the rollout records as what it deployed
 * (NEKO_SHOWN_DIGEST, written to `<state>/neko-specs/deployed`) and `npm run status` compares with
 * the stack's `expected` output: sorted NAME=value lines, empty values left out, a value's line
 * breaks written as \n. Computed here only, from the values previews show.
 */
export function shownDigest(values: Record<string, string>): string {
  const lines = Object.entries(values)
    .filter(([, v]) => v !== "")
    .map(([k, v]) => `${k}=${v.replace(/\n/g, "\\n")}\n`)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return crypto.createHash("sha256").update(lines.join("")).digest("hex");
}
