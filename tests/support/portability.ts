/**
 * What a script that runs on an operator's machine must not use, because a Mac lacks it: bash 4+
 * constructs (macOS ships bash 3.2 as /bin/bash), GNU-only tools and GNU-only options of tools a
 * Mac has (BSD versions), and array expansions that bash 3.2 refuses under `set -u` when the array
 * is empty. A line is read without its comment; a GNU-only tool is allowed where the same file
 * checks for it (`command -v TOOL`) and so has a fallback.
 */

export interface Finding {
  line: number;
  what: string;
  text: string;
}

const BASH4: [RegExp, string][] = [
  [/\b(declare|local|typeset)\s+-[a-zA-Z]*A/, "associative arrays (bash 4)"],
  [/\b(declare|local|typeset)\s+-[a-zA-Z]*n\b/, "namerefs (bash 4.3)"],
  [/\b(declare|typeset)\s+-[a-zA-Z]*g/, "declare -g (bash 4.2)"],
  [/\$\{([A-Za-z_][A-Za-z0-9_]*|[0-9]+)(\[[^\]]*\])?(,,|\^\^|,|\^)\}/, "case conversion ${x,,} / ${x^^} (bash 4)"],
  [/\$\{[A-Za-z_][A-Za-z0-9_]*@[QEPAa]\}/, "${x@Q} transformations (bash 4.4)"],
  [/\b(mapfile|readarray|coproc)\b/, "mapfile / readarray / coproc (bash 4)"],
  [/;;&|;&\s*$/, "case fall-through ;& / ;;& (bash 4)"],
  [/\|&/, "|& (bash 4)"],
  [/&>>/, "&>> (bash 4)"],
  [/\$\{[A-Za-z_][A-Za-z0-9_]*\[-\d+\]\}/, "negative array index (bash 4.3)"],
  [/\[\[\s+-v\s/, "[[ -v ]] (bash 4.2)"],
  [/\bwait\s+-n\b/, "wait -n (bash 4.3)"],
  [/\$BASHPID\b/, "$BASHPID (bash 4)"],
  [/\bshopt\s+-s\s+(globstar|lastpipe|autocd|checkjobs)/, "shopt option of bash 4"],
  [/\{[A-Za-z_][A-Za-z0-9_]*\}[<>]/, "{fd}> descriptor allocation (bash 4.1)"],
];

const GNU_TOOLS = ["timeout", "flock", "sha256sum", "sha512sum", "md5sum", "setsid", "nproc", "stdbuf", "tac", "numfmt"];

const GNU_OPTIONS: [RegExp, string][] = [
  [/\bstat\s+(-[a-zA-Z]*\s+)*-c\b|\bstat\s+--format/, "stat -c (BSD: stat -f)"],
  [/\breadlink\s+-[a-zA-Z]*f/, "readlink -f (macOS before 12.3)"],
  [/\bdate\b[^|;]*\s-d\s/, "date -d (BSD: date -j -f)"],
  [/\bsed\s+(-[a-zA-Z]*\s+)*-i(\s|$)/, "sed -i without a suffix (BSD: sed -i '')"],
  [/\bbase64\s+(-[a-zA-Z]*\s+)*-w\b/, "base64 -w (BSD has no -w)"],
  [/\bgrep\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*P/, "grep -P (BSD grep has no PCRE)"],
  [/\bfind\b.*\s-printf\b/, "find -printf"],
  [/\bxargs\s+(-[a-zA-Z0-9]*\s+)*-[a-zA-Z]*r\b/, "xargs -r"],
  [/\b(cp|mv|rm|mkdir|ln)\s+[^|;]*--(parents|target-directory|no-target-directory|reflink)\b/, "a GNU coreutils long option"],
];

/** Drops a line's comment (a `#` that starts a word, outside quotes: good enough for our scripts). */
function code(line: string): string {
  let quote = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === "\\" && quote === '"') i++;
      else if (c === quote) quote = "";
    } else if (c === "'" || c === '"') quote = c;
    else if (c === "\\") i++;
    else if (c === "#" && (i === 0 || /\s/.test(line[i - 1])) && line[i - 1] !== "$") return line.slice(0, i);
  }
  return line;
}

/** Arrays every assignment of which holds at least one element: their "${a[@]}" is never empty. */
function neverEmpty(lines: string[]): Set<string> {
  const ok = new Map<string, boolean>();
  const mark = (name: string, nonEmpty: boolean) => ok.set(name, (ok.get(name) ?? true) && nonEmpty);
  for (const l of lines) {
    for (const m of l.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=\(([^)]*)(\)?)/g)) mark(m[1], !(m[3] === ")" && m[2].trim() === ""));
    for (const m of l.matchAll(/\bread\s+(?:-[a-zA-Z]+\s+)*-a\s+([A-Za-z_][A-Za-z0-9_]*)/g)) mark(m[1], false);
    for (const m of l.matchAll(/\blocal\s+-a\s+([A-Za-z_][A-Za-z0-9_]*)\s*(?:$|;)/g)) mark(m[1], false);
  }
  return new Set([...ok].filter(([, nonEmpty]) => nonEmpty).map(([name]) => name));
}

export function portabilityFindings(text: string): Finding[] {
  const lines = text.split("\n").map(code);
  const findings: Finding[] = [];
  const full = lines.join("\n");
  const guarded = new Set(GNU_TOOLS.filter((t) => new RegExp(`command -v ${t}\\b`).test(full)));
  const safeArrays = neverEmpty(lines);
  lines.forEach((l, i) => {
    const add = (what: string) => findings.push({ line: i + 1, what, text: text.split("\n")[i].trim() });
    if (i === 0 || !l.trim()) return;
    for (const [re, what] of BASH4) if (re.test(l)) add(what);
    for (const [re, what] of GNU_OPTIONS) if (re.test(l)) add(what);
    for (const t of GNU_TOOLS) {
      if (guarded.has(t)) continue;
      if (new RegExp(`(^|[\\s;|&(\`$])${t}(\\s|$)`).test(l)) add(`${t}: not on a Mac (check with command -v and fall back)`);
    }
    for (const m of l.matchAll(/(^|[^+])"\$\{([A-Za-z_][A-Za-z0-9_]*)\[@\]\}"/g)) {
      if (!safeArrays.has(m[2])) add(`"\${${m[2]}[@]}" fails under set -u in bash 3.2 when empty: \${${m[2]}[@]+"\${${m[2]}[@]}"}`);
    }
  });
  return findings;
}
