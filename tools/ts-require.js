// @ts-check
/**
 * Lets the tools in this directory require lib/*.ts: each file is compiled as it is required, with
 * the project's own TypeScript (transpile only; `tsc --noEmit` checks the types). Require this
 * first, then e.g. `require("../lib/spec")`.
 */
"use strict";
const fs = require("fs");

if (!require.extensions[".ts"]) {
  require.extensions[".ts"] = (module, filename) => {
    const ts = require("typescript");
    const out = ts.transpileModule(fs.readFileSync(filename, "utf8"), {
      compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
      fileName: filename,
    });
    /** @type {any} */ (module)._compile(out.outputText, filename);
  };
}
