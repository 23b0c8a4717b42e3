import { LIMITS, limits } from '@ferry/common';
import { InvalidArgumentError } from '../errors.js';
import { DTYPE_BYTES, decodeElements } from '../weights/host-tensor.js';

const DESCR: Readonly<Record<string, string>> = {
  '<f4': 'float32',
  '<f8': 'float64',
  '<f2': 'float16',
  '<i8': 'int64',
  '<i4': 'int32',
  '|u1': 'uint8',
};

/** Reads a NumPy .npy array (C order, little-endian) as float32. */
export function readNpy(bytes: Uint8Array, file = 'array'): { shape: number[]; data: Float32Array } {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || !magic.every((b, i) => bytes[i] === b))
    throw new InvalidArgumentError(`${file}: not a .npy file`);
  const major = bytes[6]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder('latin1').decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  const dtype = descr ? DESCR[descr] : undefined;
  if (!dtype) throw new InvalidArgumentError(`${file}: unsupported dtype ${descr ?? '?'} (use float32)`);
  if (fortran === 'True')
    throw new InvalidArgumentError(`${file}: Fortran-ordered arrays are not supported (np.ascontiguousarray)`);
  if (shapeText === undefined) throw new InvalidArgumentError(`${file}: the .npy header has no shape`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : NaN));
  if (shape.some((d) => !Number.isSafeInteger(d)))
    throw new InvalidArgumentError(`${file}: the .npy shape (${shapeText}) must hold non-negative integers`);
  const n = shape.reduce((a, b) => a * b, 1);
  const max = limits().maxTensorElements;
  if (n > max)
    throw new InvalidArgumentError(
      `${file}: the .npy shape (${shape.join(', ')}) has ${n} elements, more than the ${max} allowed (${LIMITS.maxTensorElements.flag})`,
    );
  const dataStart = start + headerLen;
  // Checked before allocating: a header may declare more elements than the file holds.
  const need = n * (DTYPE_BYTES[dtype] ?? 4);
  if (!Number.isSafeInteger(need) || dataStart + need > bytes.length) {
    throw new InvalidArgumentError(
      `${file}: the .npy header declares shape (${shape.join(', ')}) ${descr}, ${need} bytes, but the file holds ${Math.max(0, bytes.length - dataStart)} (truncated?)`,
    );
  }
  return { shape, data: decodeElements(bytes, dataStart, n, dtype) };
}

/** Writes a float32 .npy (version 1.0). */
export function writeNpy(data: Float32Array, shape: readonly number[]): Buffer {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const out = Buffer.alloc(10 + header.length + data.byteLength);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(out, 0);
  out.writeUInt16LE(header.length, 8);
  out.write(header, 10, 'latin1');
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, 10 + header.length);
  return out;
}

/** NCHW -> NHWC for a 4-D float array. */
export function nchwToNhwc(
  data: Float32Array,
  shape: readonly number[],
): { data: Float32Array; shape: [number, number, number, number] } {
  if (shape.length !== 4) throw new InvalidArgumentError(`expected a 4-D NCHW array, got shape [${shape.join(', ')}]`);
  const [n, c, h, w] = shape as [number, number, number, number];
  const out = new Float32Array(data.length);
  for (let b = 0; b < n; b++)
    for (let ch = 0; ch < c; ch++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) out[((b * h + y) * w + x) * c + ch] = data[((b * c + ch) * h + y) * w + x]!;
  return { data: out, shape: [n, h, w, c] };
}
