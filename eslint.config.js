import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      '**/dist/**',
      'packages/protocol/src/gen/**',
      'node_modules/**',
      '.cache/**',
      'coverage/**',
      '.gpu/**',
      '**/*.js',
      '!eslint.config.js',
      '!packages/dashboard/public/*.js',
    ],
  },
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: {
        project: ['./packages/*/tsconfig.json', './test/tsconfig.json', './packages/dashboard/tsconfig.public.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-restricted-syntax': [
        'error',
        {
          selector: 'ExportDefaultDeclaration',
          message: 'No default exports: a name is written once, where it is defined, so imports and searches find it.',
        },
        {
          selector: "CallExpression[callee.object.name=/^(test|it|describe)$/][callee.property.name='only']",
          message: 'No .only in committed tests.',
        },
      ],
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['@ferry/*/src/*', '**/packages/*/src/*'], message: 'Import a package by its entry point only.' },
          ],
        },
      ],
    },
  },
  {
    // The dashboard's browser code: ES modules (app.js imports chart.js), the browser's globals and
    // uPlot's (its IIFE build, loaded first: it has no ES module build that works without a
    // bundler); type-checked by packages/dashboard/tsconfig.public.json.
    files: ['packages/dashboard/public/*.js'],
    languageOptions: {
      sourceType: 'module',
      globals: { ...globals.browser, uPlot: 'readonly' },
    },
    rules: { 'no-undef': 'error' },
  },
  {
    // Hand-written functions stay short enough to read in one screen (generated code is ignored above).
    files: ['packages/*/src/**/*.ts', 'packages/dashboard/public/*.js'],
    rules: { 'max-lines-per-function': ['error', { max: 80, skipBlankLines: false, skipComments: false }] },
  },
  {
    files: ['**/test/**/*.ts', 'vitest.config.ts', 'test/setup/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        { selector: "CallExpression[callee.property.name='only']", message: 'No .only.' },
      ],
    },
  },
);
