import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const TORCH_REFERENCE_SCRIPT = path.join(REPO_ROOT, 'test/fixtures/torch_reference.py');

/** Where the torchvision reference values live; keyed by the generator script's content. */
export function torchRefDir(): string {
  const hash = createHash('sha256').update(readFileSync(TORCH_REFERENCE_SCRIPT)).digest('hex').slice(0, 12);
  return path.join(REPO_ROOT, '.cache', 'torch-ref', hash);
}
