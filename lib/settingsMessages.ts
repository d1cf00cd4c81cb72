/**
 * How settings problems are worded: each names its key in the form `pulumi config set --path`
 * takes (`neko-infra:host.sshCidrs[0]`) and says what to do instead.
 */
import { z } from "zod";

const PROJECT = "neko-infra";

/** For sections with kinds: the fields of each kind. */
export type KindFields = Record<string, string[]>;

/** `neko-infra:<path>` */
export function keyOf(p: string): string {
  return `${PROJECT}:${p}`;
}

/** `host`, ["sshCidrs", 0] -> `host.sshCidrs[0]` */
export function configPath(section: string, parts: PropertyKey[]): string {
  return parts.reduce<string>((acc, p) => (typeof p === "number" ? `${acc}[${p}]` : `${acc}.${String(p)}`), section);
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1].toLowerCase() === b[j - 1].toLowerCase() ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length];
}

/** `; did you mean 'x'?` for the nearest candidate within a few edits, or "". */
export function didYouMean(word: string, candidates: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = distance(word, c);
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 4)) ? `; did you mean '${best}'?` : "";
}

/**
 * `pulumi config set host.gpu true` (without --path) stores a key literally named `host.gpu`.
 * The hint says how to put it where it belongs.
 */
export function dottedKeyHint(name: string, sections: readonly string[]): string | undefined {
  const head = name.split(/[.[]/)[0];
  if (head === name || !sections.includes(head)) return undefined;
  return `${keyOf(name)}: set without --path, so it is a key of its own named '${name}'; move it: pulumi config rm '${name}' && pulumi config set --path '${name}' <value>`;
}

const BOOLEAN_WORDS = /^(yes|no|on|off|true|false|y|n|1|0|enabled|disabled)$/i;

export interface IssueContext {
  /** The section's kind (given, or its default), for sections with kinds. */
  kind?: string;
  kinds?: KindFields;
  /** Fields of sections without kinds. */
  fields?: string[];
  /** Fields of nested objects, by their path inside the section (`webrtc`). */
  nested?: Record<string, string[]>;
}

export function describeIssue(section: string, issue: z.core.$ZodIssue, ctx: IssueContext): string[] {
  const where = configPath(section, issue.path);
  const key = keyOf(where);
  switch (issue.code) {
    case "unrecognized_keys":
      return issue.keys.map((k) => `${keyOf(configPath(section, [...issue.path, k]))}: ${unknownField(section, issue.path, k, ctx)}`);
    case "invalid_union":
      if (ctx.kinds && issue.path.length === 1 && issue.path[0] === "kind") {
        const kinds = Object.keys(ctx.kinds);
        return [`${key}: must be one of ${kinds.join(", ")}${didYouMean(String(ctx.kind), kinds)}`];
      }
      return [`${key}: ${issue.message}`];
    case "invalid_type": {
      const input = (issue as { input?: unknown }).input;
      if (input === undefined) {
        return [issue.message.startsWith("required") ? `${key}: ${issue.message}` : `${key}: required (${plain(issue.message)})`];
      }
      if (issue.expected === "boolean" && typeof input === "string" && BOOLEAN_WORDS.test(input)) {
        return [`${key}: "${input}" is text; use true or false: pulumi config set --path '${where}' true`];
      }
      if (issue.expected === "number" && typeof input === "string" && /^-?\d+(\.\d+)?$/.test(input.trim())) {
        return [`${key}: "${input}" is text; give the number itself: pulumi config set --path '${where}' ${input.trim()}`];
      }
      return [`${key}: ${plain(issue.message)}`];
    }
    default:
      return [`${key}: ${plain(issue.message)}`];
  }
}

function plain(message: string): string {
  return message.replace(/^Invalid input: /, "");
}

function unknownField(section: string, parent: PropertyKey[], field: string, ctx: IssueContext): string {
  if (parent.length === 0 && ctx.kinds && ctx.kind !== undefined) {
    const owners = Object.entries(ctx.kinds)
      .filter(([kind, fields]) => kind !== ctx.kind && fields.includes(field))
      .map(([kind]) => kind);
    if (owners.length) return `applies to kind ${owners.join(" or ")}, but ${section}.kind is ${ctx.kind}`;
    const fields = ctx.kinds[ctx.kind] ?? [];
    return `unknown key${didYouMean(field, fields) || `; ${section} (kind ${ctx.kind}) takes ${fields.join(", ")}`}`;
  }
  const fields = parent.length === 0 ? ctx.fields : ctx.nested?.[parent.join(".")];
  if (!fields) return "unknown key";
  return `unknown key${didYouMean(field, fields) || `; ${configPath(section, parent)} takes ${fields.join(", ")}`}`;
}
