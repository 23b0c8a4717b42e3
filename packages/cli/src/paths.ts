import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CliIo } from './io.js';

/** ferry's cache (weights, datasets, features): FERRY_CACHE, else XDG_CACHE_HOME/ferry or ~/.cache/ferry. */
export function defaultCacheDir(io: CliIo): string {
  const home = io.env['HOME'] ?? '.';
  return io.env['FERRY_CACHE'] ?? path.join(io.env['XDG_CACHE_HOME'] ?? path.join(home, '.cache'), 'ferry');
}

/** The `ferry` entry script (from src/ under a TS runner, or dist/ when built: both one level down). */
export function ferryBin(): [string, string] {
  return [process.execPath, fileURLToPath(new URL('../bin/ferry.js', import.meta.url))];
}
