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

/**
 * Reads a float64 .npy (C order, little-endian) as float64: ferry's readNpy converts to float32,
 * which would round a float64 reference by up to 2^-24 of each value, a share of the very error the
 * parity tests measure. Anything but '<f8' is refused, so a reference stored as float32 cannot pass
 * for a float64 one.
 */
export function readNpy64(file: string): RefTensor64 {
  const bytes = readFileSync(file);
  const major = bytes[6]!;
  const headerLen = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = bytes.subarray(start, start + headerLen).toString('latin1');
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  if (descr !== '<f8' || !/'fortran_order':\s*False/.test(header))
    throw new Error(`${file}: expected a C-order float64 (<f8) .npy, got ${descr ?? '?'}`);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? '')
    .split(',')
    .filter((s) => s.trim().length > 0)
    .map(Number);
  const data = bytes.subarray(start + headerLen);
  const n = shape.reduce((a, b) => a * b, 1);
  if (data.byteLength !== n * 8) throw new Error(`${file}: ${data.byteLength} bytes for shape (${shape.join(', ')})`);
  return { data: new Float64Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)), shape };
}
