import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const src = (pkg: string): string => fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url));

export default defineConfig({
  resolve: {
    alias: {
      '@ferry/common': src('common'),
      '@ferry/torch': src('torch'),
      // Before '@ferry/core', which would otherwise match it as a prefix.
      '@ferry/core/internal': fileURLToPath(new URL('./packages/core/src/internal.ts', import.meta.url)),
      '@ferry/core': src('core'),
      '@ferry/cli': src('cli'),
      '@ferry/coordinator': src('coordinator'),
      '@ferry/worker': src('worker'),
      '@ferry/client': src('client'),
      '@ferry/protocol': src('protocol'),
      '@ferry/events': src('events'),
      '@ferry/dashboard': src('dashboard'),
    },
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/setup/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 600_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    allowOnly: false,
  },
});
