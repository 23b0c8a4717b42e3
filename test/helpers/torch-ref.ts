import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { relErr } from './compare.js';

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

/**
 * Below this, a relative error is a few float32 roundings (unit roundoff 6e-8) and says nothing of
 * the computation: torch's float32 run can land that close by luck.
 */
export const ROUNDING_FLOOR = 1e-6;

/**
 * How far ferry's float32 may land from torch's float64 result: TOLERANCE_FACTOR times the distance
 * torch's own float32 run lands from it on the same machine, weights, inputs and computation (or
 * ROUNDING_FLOOR of the reference's scale, if larger). float32 rounding differs between CPUs and
 * kernels (oneDNN, XNNPACK and TF.js's loops sum in different orders), but its size follows the
 * computation's conditioning, which torch's float32 run measures (measured on a 2-core EPYC:
 * training, worst ratios over tensors 2.0 finetune, 2.8 freeze, 1.9 adapt, ferry 100x below torch
 * float32 on early convolutions, where torch's fast kernels round more; eval-mode logits, ratios
 * 1.3 to 2.6 on wasm, 0.85 to 0.94 on cpu; finetune on webgpu, lavapipe, worst ratio 1.8). A protocol error (BatchNorm in the wrong mode or with the wrong eps,
 * a frozen tensor updated, a wrong learning rate, a misplaced weight) is orders of magnitude larger.
 */
export const TOLERANCE_FACTOR = 16;

/**
 * Per tensor, ferry's error against torch's float64 result divided by torch float32's own error
 * (at least ROUNDING_FLOOR); the worst ratio over tensors, for the values and for the change from
 * the initial state (far smaller than the weights, so checked on its own). Errors are relErr:
 * max |got - want| / max |want| over the tensor.
 */
export function worstRatio(
  got: ReadonlyMap<string, { data: Float32Array }>,
  want64: ReadonlyMap<string, RefTensor64>,
  want32: ReadonlyMap<string, RefTensor64>,
  init: ReadonlyMap<string, { data: Float32Array }>,
  names: readonly string[],
): { ratio: number; name: string; ferry: number; torch32: number } {
  let worst = { ratio: 0, name: '', ferry: 0, torch32: 0 };
  for (const name of names) {
    const w = want64.get(name)!.data;
    const w0 = init.get(name)!.data;
    const g = got.get(name)!.data;
    const t = want32.get(name)!.data;
    const delta = (x: ArrayLike<number>): Float64Array => Float64Array.from(x, (v, i) => v - w0[i]!);
    const dWant = delta(w);
    for (const [ferry, torch32] of [
      [relErr(g, w), relErr(t, w)],
      [relErr(delta(g), dWant), relErr(delta(t), dWant)],
    ] as const) {
      const ratio = ferry / Math.max(torch32, ROUNDING_FLOOR);
      if (ratio > worst.ratio) worst = { ratio, name, ferry, torch32 };
    }
  }
  return worst;
}
