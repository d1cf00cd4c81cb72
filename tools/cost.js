// @ts-check
/**
 * `npm run cost -- STACK [STACK...]`: what each stack costs a month on AWS, idle and in use, from
 * its Pulumi.STACK.yaml and lib/prices.ts (lib/cost.ts); no AWS account, no Pulumi backend.
 * `npm run cost -- --readme`: writes the tables of the dev and prod stacks into README.md, between
 * its `<!-- cost:STACK -->` markers (tests/unit/cost.test.ts fails when they differ).
 *
 * The stack's settings are validated as `pulumi preview` does, except for the example addresses
 * (they do not change a price); a secret reads as a placeholder. Exit 1 with the problems when the
 * settings or the price table fall short, 2 on usage errors.
 */
"use strict";
const fs = require("fs");
const path = require("path");

const ROOT = path.join(__dirname, "..");

// lib/ is TypeScript.
require("./ts-require");

/** The stack's config as Pulumi hands it to the program: `neko-infra:<section>` -> JSON text. @param {string} stack */
function stackConfig(stack) {
  const file = path.join(ROOT, `Pulumi.${stack}.yaml`);
  if (!fs.existsSync(file)) throw new Error(`no ${path.basename(file)} here: the stack's settings live there`);
  const doc = require("yaml").parse(fs.readFileSync(file, "utf8")) ?? {};
  /** @param {any} v @returns {any} */
  const plain = (v) =>
    v && typeof v === "object"
      ? "secure" in v
        ? "secret-placeholder"
        : Array.isArray(v)
          ? v.map(plain)
          : Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]))
      : v;
  /** @type {Record<string, string>} */
  const config = {};
  for (const [key, value] of Object.entries(doc.config ?? {})) {
    let v = plain(value);
    // Example addresses do not change a price.
    const ec2 = v && typeof v === "object" && (v.kind === undefined || v.kind === "ec2"); // ec2 is the default kind
    if ((key === "neko-infra:builder" || key === "neko-infra:host") && ec2) v = { ...v, allowDocumentationRanges: true };
    config[key] = typeof v === "string" ? v : JSON.stringify(v);
  }
  return { config, region: String(doc.config?.["aws:region"] ?? "us-east-1") };
}

/** @param {string} stack @returns {string} */
function tableOf(stack) {
  const { parseSettings } = require("../lib/settings.ts");
  const { estimate, costTable } = require("../lib/cost.ts");
  const { config, region } = stackConfig(stack);
  const settings = parseSettings({ config, secretKeys: [], projectDir: ROOT, fileExists: fs.existsSync });
  return costTable(stack, estimate(settings, region));
}

/** The README's block for STACK: what lies between its markers. */
const BLOCK = (/** @type {string} */ stack) => new RegExp(`(<!-- cost:${stack} -->\\n)([\\s\\S]*?)(<!-- /cost:${stack} -->)`);

async function writeReadme() {
  const file = path.join(ROOT, "README.md");
  let text = fs.readFileSync(file, "utf8");
  for (const stack of ["dev", "prod"]) {
    if (!BLOCK(stack).test(text)) throw new Error(`README.md has no <!-- cost:${stack} --> ... <!-- /cost:${stack} --> block`);
    text = text.replace(BLOCK(stack), (_, open, _old, close) => `${open}${tableOf(stack)}\n${close}`);
  }
  // As `npm run format` would write it (aligned table columns), so the lint stays clean.
  const prettier = require("prettier");
  text = await prettier.format(text, { ...(await prettier.resolveConfig(file)), filepath: file });
  fs.writeFileSync(file, text);
  console.log("cost: README.md's tables written for dev and prod");
}

/** @param {string[]} argv */
async function main(argv) {
  if (argv.length === 0 || argv.some((a) => a.startsWith("-") && a !== "--readme")) {
    console.error("usage: npm run cost -- STACK [STACK...]   |   npm run cost -- --readme");
    return 2;
  }
  try {
    if (argv.includes("--readme")) await writeReadme();
    else console.log(argv.map(tableOf).join("\n\n"));
    return 0;
  } catch (e) {
    const err = /** @type {Error} */ (e);
    console.error(`cost: ${String(err.message).split("\n").slice(0, 20).join("\n  ")}`);
    return 1;
  }
}

if (require.main === module) main(process.argv.slice(2)).then((code) => (process.exitCode = code));
module.exports = { tableOf, BLOCK };
