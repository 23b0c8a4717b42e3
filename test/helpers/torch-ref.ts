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

/** A float64 tensor of a reference state, torch layout. */
export interface RefTensor64 {
  readonly data: Float64Array;
  readonly shape: readonly number[];
}

/**
 * Reads a state written by torch_reference.py's save_f64 (`<base>.f64` raw little-endian float64
 * plus `<base>.json` {name: [offset, count, shape]}): ferry's own readers keep float32, which would
 * round the reference.
 */
export function readState64(base: string): Map<string, RefTensor64> {
  const index = JSON.parse(readFileSync(`${base}.json`, 'utf8')) as Record<string, [number, number, number[]]>;
  const bytes = readFileSync(`${base}.f64`);
  const all = new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const out = new Map<string, RefTensor64>();
  for (const [name, [offset, count, shape]] of Object.entries(index))
    out.set(name, { data: all.subarray(offset, offset + count), shape });
  return out;
}
