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
    ],
  },
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: {
        project: ['./packages/*/tsconfig.json', './test/tsconfig.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-restricted-syntax': [
        'error',
        { selector: 'ExportDefaultDeclaration', message: 'No default exports (STYLE.md 11).' },
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
    files: ['**/test/**/*.ts', 'vitest.config.ts', 'test/setup/*.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        { selector: "CallExpression[callee.property.name='only']", message: 'No .only.' },
      ],
    },
  },
);
