// ESLint (flat config): the recommended JS and typescript-eslint rules, without the type-aware ones
// (they would type-check the project a second time; `tsc` does that in `npm run lint`). Formatting
// is prettier's job (.prettierrc.json): no stylistic rules here. An eslint-disable comment that no
// longer silences anything is an error, so none outlives the code it excused.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'build-torch/**', 'node_modules/**', 'bench/results/**', 'coverage/**'] },
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      // A leading underscore marks a value kept on purpose (a rest-sibling, an unused callback argument).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // `let { a, b } = ...` where only b is reassigned stays one statement.
      'prefer-const': ['error', { destructuring: 'all' }],
      // Reading a package's own package.json for its version is fine.
      '@typescript-eslint/no-require-imports': ['error', { allow: ['/package\\.json$'] }],
    },
  },
  {
    // Plain JS: bin/, scripts/, jest.config.js, test/summary-reporter.js (CommonJS).
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // Tests and benchmarks read JSON from child processes and poke at internals: `any` is allowed
    // there; in lib/ it stops at lib/native.ts (docs/architecture.md).
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    languageOptions: { globals: { ...globals.jest } },
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      // One skip idiom, with its reason in the test's name: skipIf(reason) of test/helpers/skip.ts.
      'no-restricted-properties': [
        'error',
        ...['describe', 'it', 'test'].flatMap((object) => [
          { object, property: 'skip', message: 'use skipIf(reason) from test/helpers/skip.ts' },
          { object, property: 'only', message: 'a focused test would silently skip the rest' },
        ]),
      ],
    },
  },
  {
    files: ['test/helpers/skip.ts'],
    rules: { 'no-restricted-properties': 'off' },
  },
);
