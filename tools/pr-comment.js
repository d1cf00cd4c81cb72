// @ts-check
/**
 * The pull request comment for one stack, rendered from `pulumi preview --json` (the preview
 * digest: config, steps with urn/op/old and new state, diagnostics, change summary) and, when
 * given, the preview's `--event-log` (the digest leaves policy violations out; the event log has
 * them). One screen: what is built (flake and attr), what is pushed where, what is rolled out on
 * which machine (and which of its non-secret settings change, old -> new), which machines a deploy
 * would wake, and what else changes.
 *
 *   node tools/pr-comment.js STACK PREVIEW_JSON [EVENT_LOG] [--status N] [--link URL] > comment.md
 *
 * Only values the preview already shows in plain text are printed: step command lines (their
 * secrets travel on standard input), the non-secret spec lines under them, resource names, the
 * stack's non-secret config, diagnostics and policy messages (the engine masks secrets as
 * [secret]). Every line is capped. The first line is a marker the workflow finds the comment by.
 */
"use strict";
const fs = require("fs");

const LINE_MAX = 200;
const LIST_MAX = 12;
/** What the engine puts in a preview where a value is not known until the update runs. */
const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
const RUNS = new Set(["create", "update", "replace", "create-replacement"]);

/** @param {string} s @param {number} [max] */
function cap(s, max = LINE_MAX) {
  const one = String(s).replace(/\s*\n\s*/g, " ");
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}

/** A value in inline code (backticks in it cannot end the span). @param {string} s @param {number} [max] */
function code(s, max) {
  return `\`${cap(s, max).replace(/`/g, "'")}\``;
}

/** @param {string} v */
const shown = (v) => (v === UNKNOWN ? "(known after the update)" : v);

/** @param {string} urn */
const nameOf = (urn) => urn.split("::").pop() ?? urn;
/** @param {string} urn */
const typeOf = (urn) => (urn.split("::")[2] ?? "").split("$").pop() ?? "";

/**
 * A step's command line: its arguments after `bash -s --` (shell-unquoted), and the non-secret spec
 * lines written under it (`#   NAME=value`, `#   NAME: part` for values of several lines).
 * @param {unknown} create
 * @returns {{ known: boolean, args: string[], spec: Record<string, string> }}
 */
function parseCreate(create) {
  if (typeof create !== "string" || create === UNKNOWN || create === "[secret]") return { known: false, args: [], spec: {} };
  const [line, ...rest] = create.split("\n");
  const at = line.indexOf("bash -s --");
  const args = at < 0 ? [] : unquote(line.slice(at + "bash -s --".length));
  /** @type {Record<string, string>} */
  const spec = {};
  for (const l of rest) {
    let m = /^#   ([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(l);
    if (m) spec[m[1]] = m[2];
    else if ((m = /^#   ([A-Za-z_][A-Za-z0-9_]*): (.*)$/.exec(l))) spec[m[1]] = spec[m[1]] === undefined ? m[2] : `${spec[m[1]]} ${m[2]}`;
  }
  return { known: true, args, spec };
}

/** Words of a POSIX shell line as lib/shell.ts quotes them (plain words and '...' with '\''). @param {string} s */
function unquote(s) {
  /** @type {string[]} */
  const words = [];
  const re = /\s*((?:'[^']*'|\\.|[^\s'\\])+)/g;
  let m;
  while ((m = re.exec(s))) words.push(m[1].replace(/'([^']*)'|\\(.)/g, (_, q, e) => q ?? e));
  return words;
}

/** @param {Record<string, string>} before @param {Record<string, string>} after */
function specChanges(before, after) {
  const names = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
  return names
    .filter((n) => before[n] !== after[n])
    .map((n) =>
      before[n] === undefined
        ? `${n}: ${code(after[n], 80)} (new)`
        : after[n] === undefined
          ? `${n}: removed`
          : `${n}: ${code(before[n], 80)} => ${code(after[n], 80)}`,
    );
}

/** @param {string} l */
function parseLine(l) {
  if (!l.startsWith("{")) return undefined;
  try {
    return JSON.parse(l);
  } catch {
    return undefined;
  }
}

/**
 * What the event log adds to the digest: policy violations, and the stack's outputs before and
 * after (the digest has only the old ones), i.e. the `expected` output's old and new values.
 * @param {string | undefined} log
 * @returns {{ policies: string[], outputs?: { old: any, new: any } }}
 */
function fromEvents(log) {
  /** @type {string[]} */
  const policies = [];
  /** @type {{ old: any, new: any } | undefined} */
  let outputs;
  for (const l of (log ?? "").split("\n")) {
    const ev = parseLine(l);
    const p = ev?.policyEvent;
    if (p) {
      const on = p.resourceUrn ? ` (${typeOf(p.resourceUrn)}: ${nameOf(p.resourceUrn)})` : "";
      policies.push(`[${p.enforcementLevel}] ${p.policyName}${on}: ${String(p.message ?? "").split("\n")[0]}`);
    }
    const m = ev?.resOutputsEvent?.metadata;
    // The last outputs event of the stack carries the outputs the update would leave.
    if (m?.type === "pulumi:pulumi:Stack") outputs = { old: m.old?.outputs ?? {}, new: m.new?.outputs ?? {} };
  }
  return { policies: [...new Set(policies)], outputs };
}

/**
 * Changes of one part of the stack output `expected` (neko, front, turn), old => new.
 * @param {{ old: any, new: any } | undefined} outputs @param {string} part
 */
function expectedChanges(outputs, part) {
  if (!outputs) return undefined;
  /** @param {any} v @returns {Record<string, string>} */
  const flat = (v) => (v && typeof v === "object" ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shown(String(x))])) : {});
  return specChanges(flat(outputs.old?.expected?.[part]), flat(outputs.new?.expected?.[part]));
}

/** Where a host step runs, from the stack's outputs. @param {any} outputs */
function hostWhere(outputs) {
  const url = outputs?.url;
  return typeof url === "string" && url !== UNKNOWN && url !== "[secret]" ? ` on the host (${url})` : " on the host";
}

/** Host steps whose spec is a part of `expected`. */
const HOST_STEPS = /** @type {const} */ ([
  [/-neko$/, "neko", "neko"],
  [/-tls$/, "the HTTPS front", "front"],
  [/-turn$/, "the TURN relay", "turn"],
]);

/**
 * What a preview would do, by kind of step.
 * @param {any} preview the parsed `pulumi preview --json`
 * @param {{ old: any, new: any }} [outputs] the stack's outputs before and after, from the event log
 */
function summarize(preview, outputs) {
  const steps = /** @type {any[]} */ (preview.steps ?? []);
  /** @type {{ built: string[], pushed: string[], rolled: string[], wakes: Map<string, string[]>, other: string[] }} */
  const out = { built: [], pushed: [], rolled: [], wakes: new Map(), other: [] };
  /** @type {{ flake?: string, attr?: string }} */
  let image = {};
  try {
    image = JSON.parse(preview.config?.["neko-infra:image"] ?? "{}");
  } catch {
    /* not JSON: left out */
  }
  const stackOutputs = outputs?.new ?? steps.find((s) => typeOf(String(s.urn ?? "")) === "pulumi:pulumi:Stack")?.oldState?.outputs;
  for (const s of steps) {
    const urn = String(s.urn ?? "");
    const name = nameOf(urn);
    const type = typeOf(urn);
    const op = String(s.op ?? "");
    if (op === "same" || op === "read" || type === "pulumi:pulumi:Stack" || type.startsWith("pulumi:providers:")) continue;
    if (op === "delete-replaced" || op === "discard-replaced") continue; // the other half of a replace
    const isCommand = type === "command:local:Command" || type === "command:remote:Command";
    const now = parseCreate(s.newState?.inputs?.create);
    const was = parseCreate(s.oldState?.inputs?.create);
    const how = op === "create-replacement" ? "replace" : op;
    const runs = isCommand && RUNS.has(op);
    if (isCommand && name.endsWith("-wake")) {
      if (!runs) continue;
      const m = /# wake (.+?) and wait until it is ready for (\S+)/.exec(String(s.newState?.inputs?.create ?? ""));
      const machine = m ? m[1] : "a machine";
      out.wakes.set(machine, [...(out.wakes.get(machine) ?? []), m ? m[2] : name.replace(/-wake$/, "")]);
      continue;
    }
    if (runs && /-build$/.test(name)) {
      const target = now.known ? `${shown(now.args[0] ?? "?")}#${shown(now.args[1] ?? "?")}` : "(known after the update)";
      const configured = image.flake ? ` (flake ${code(String(image.flake))}, attr ${code(String(image.attr))})` : "";
      out.built.push(`${code(target)}${configured} by ${code(name)} (${how})`);
      continue;
    }
    if (runs && /-(push|load)$/.test(name)) {
      const where = name.endsWith("-load") ? "loaded into this machine's Docker as" : "pushed to";
      // The store path is known only after the build; the repository is the one from before.
      const dest = now.known ? shown(now.args[1] ?? "?") : was.known ? shown(was.args[1] ?? "?") : "(known after the update)";
      out.pushed.push(`the image ${where} ${code(dest)} by ${code(name)} (${how})`);
      continue;
    }
    const hostStep = runs ? HOST_STEPS.find(([re]) => re.test(name)) : undefined;
    if (hostStep) {
      const [, label, part] = hostStep;
      const fromExpected = expectedChanges(outputs, part);
      const changes = fromExpected ?? (was.known && now.known ? specChanges(was.spec, now.spec) : []);
      let what = /** @type {string} */ (label);
      if (part === "neko") {
        const sameImage = now.known && was.known && was.args[0] === now.args[0];
        what = `neko ${sameImage ? "(the same image)" : now.known ? code(shown(now.args[0] ?? "?")) : "(the image just pushed; its digest is known after the push)"}`;
      }
      out.rolled.push(`${what}${hostWhere(stackOutputs)} by ${code(name)} (${how})${changes.length ? ":" : ""}`);
      for (const c of changes.slice(0, LIST_MAX)) out.rolled.push(`  - ${c}`);
      if (changes.length > LIST_MAX) out.rolled.push(`  - and ${changes.length - LIST_MAX} more`);
      continue;
    }
    const changes = isCommand && was.known && now.known ? specChanges(was.spec, now.spec) : [];
    const reasons = /** @type {string[]} */ (s.diffReasons ?? s.replaceReasons ?? []);
    const why = changes.length ? `: ${changes.slice(0, 3).join(", ")}` : reasons.length ? ` (${reasons.slice(0, 4).join(", ")})` : "";
    out.other.push(`${how} ${code(name)} ${type}${why}`);
  }
  return out;
}

/**
 * The comment's markdown.
 * @param {{ stack: string, preview: any, eventLog?: string, status?: number, link?: string }} o
 */
function render(o) {
  const p = o.preview ?? {};
  const events = fromEvents(o.eventLog);
  const s = summarize(p, events.outputs);
  const counts = Object.entries(p.changeSummary ?? {})
    .filter(([, n]) => Number(n) > 0)
    .map(([op, n]) => `${n} ${op}`)
    .join(", ");
  const failed = o.status !== undefined && o.status !== 0;
  const out = [
    `<!-- neko-infra:pr-comment stack=${o.stack} -->`,
    `### \`pulumi preview\` of ${o.stack}: ${failed ? `**failed** (exit ${o.status})` : counts || "no changes"}`,
    "",
  ];
  /** @param {string} title @param {string[]} lines @param {string} none */
  const section = (title, lines, none) => {
    out.push(`**${title}:** ${lines.length ? "" : none}`);
    for (const l of lines.slice(0, LIST_MAX)) out.push(l.startsWith("  - ") ? cap(l) : `- ${cap(l)}`);
    if (lines.length > LIST_MAX) out.push(`- and ${lines.length - LIST_MAX} more`);
  };
  section("Built", s.built, "nothing (the flake and attr are unchanged)");
  section("Pushed", s.pushed, "nothing");
  section("Rolled out", s.rolled, "nothing on the host changes");
  const wakes = [...s.wakes].map(([machine, steps]) => `${machine}, for ${steps.map((x) => code(x)).join(", ")}`);
  section("A deploy wakes", wakes, "no machine (no step would run on one)");
  section("Other changes", s.other, "none");
  if (events.policies.length) section("Policies", events.policies, "");
  const problems = /** @type {any[]} */ (p.diagnostics ?? []).filter((d) => d.severity === "error" || d.severity === "warning");
  if (problems.length) {
    out.push("", "<details><summary>Errors and warnings</summary>", "", "```");
    for (const d of problems.slice(0, LIST_MAX)) {
      const at = d.urn ? `${nameOf(d.urn)}: ` : "";
      const lines = String(d.message ?? "")
        .replace(new RegExp(`^${d.severity}: `), "")
        .split("\n")
        .filter((l) => l.trim() !== "");
      out.push(`${d.severity}: ${cap(at + (lines[0] ?? ""))}`, ...lines.slice(1, 6).map((l) => `  ${cap(l)}`));
    }
    out.push("```", "</details>");
  }
  if (o.link) out.push("", `The whole preview: ${o.link}`);
  return `${out.join("\n")}\n`;
}

module.exports = { render, summarize, parseCreate, fromEvents, UNKNOWN };

if (require.main === module) {
  const argv = process.argv.slice(2);
  /** @param {string} flag */
  const take = (flag) => {
    const i = argv.indexOf(flag);
    return i < 0 ? undefined : argv.splice(i, 2)[1];
  };
  const status = take("--status");
  const link = take("--link");
  const [stack, previewFile, eventLog] = argv;
  if (!stack || !previewFile) {
    process.stderr.write("usage: node tools/pr-comment.js STACK PREVIEW_JSON [EVENT_LOG] [--status N] [--link URL]\n");
    process.exit(2);
  }
  let preview = {};
  const text = fs.existsSync(previewFile) ? fs.readFileSync(previewFile, "utf8") : "";
  try {
    // A preview that failed before its digest leaves no JSON (or a partial one): say so, render what there is.
    preview = text.trim() ? JSON.parse(text) : {};
  } catch (e) {
    process.stderr.write(
      `pr-comment: ${previewFile} is not the JSON of \`pulumi preview --json\` (${cap(String(e), 120)}); rendering without it\n`,
    );
  }
  const log = eventLog && fs.existsSync(eventLog) ? fs.readFileSync(eventLog, "utf8") : undefined;
  process.stdout.write(render({ stack, preview, eventLog: log, status: status === undefined ? undefined : Number(status), link }));
}
