import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { TORCH_REFERENCE_SCRIPT, torchRefDir } from '../helpers/torch-ref.js';

/**
 * Generates the torchvision reference values once (Debian's python3-torch, see scripts/test.sh).
 * A missing torch is an error, not a skip: parity is part of what the suite proves.
 */
export function setup(): void {
  const dir = torchRefDir();
  if (existsSync(path.join(dir, 'DONE'))) return;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const python = process.env['FERRY_TEST_PYTHON'] ?? '/usr/bin/python3';
  try {
    execFileSync(python, [TORCH_REFERENCE_SCRIPT, dir], { stdio: 'inherit', timeout: 300_000 });
  } catch (e) {
    throw new Error(
      `generating torchvision reference values failed (${(e as Error).message}); install python3-torch and python3-torchvision (scripts/test.sh does)`,
    );
  }
}
