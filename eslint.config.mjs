// ESLint (typescript-eslint, recommended rules) over the program, the policy pack and the tests.
// Formatting is Prettier's job (npm run lint runs both); no stylistic rules here.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/", "bin/", "policy/node_modules/", "**/*.js", "!eslint.config.mjs"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      // test doubles and the mock harness handle untyped protobuf and engine JSON
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    // tests load fresh copies of the SDK and the program per run (jest.isolateModules): require() it is
    files: ["tests/**/*.ts"],
    rules: { "@typescript-eslint/no-require-imports": "off" },
  },
);
