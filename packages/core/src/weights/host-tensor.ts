/** A tensor in host memory, as read from a file, before it becomes a TF.js variable. */
export interface HostTensor {
  /** Data type in the file (`float32`, `float16`, `bfloat16`, `float64`, `int64`, ...). */
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Values converted to float32, row-major over `shape`. */
  readonly data: Float32Array;
}

/** A state_dict: tensor name -> tensor, in file order. */
export type StateDict = Map<string, HostTensor>;

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function halfToFloat(h: number): number {
  const s = (h & 0x8000) >> 15;
  const e = (h & 0x7c00) >> 10;
  const f = h & 0x03ff;
  if (e === 0) return (s ? -1 : 1) * 2 ** -14 * (f / 1024);
  if (e === 0x1f) return f ? Number.NaN : (s ? -1 : 1) * Number.POSITIVE_INFINITY;
  return (s ? -1 : 1) * 2 ** (e - 15) * (1 + f / 1024);
}

/** Decodes `count` little-endian elements of `dtype` starting at `offset` of `bytes`. */
export function decodeElements(bytes: Uint8Array, offset: number, count: number, dtype: string): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset);
  const out = new Float32Array(count);
  switch (dtype) {
    case 'float32':
      if ((bytes.byteOffset + offset) % 4 === 0) {
        out.set(new Float32Array(bytes.buffer, bytes.byteOffset + offset, count));
      } else {
        for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
      }
      break;
    case 'float64':
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(i * 8, true);
      break;
    case 'float16':
      for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(i * 2, true));
      break;
    case 'bfloat16': {
      const tmp = new DataView(new ArrayBuffer(4));
      for (let i = 0; i < count; i++) {
        tmp.setUint16(0, view.getUint16(i * 2, true), false);
        tmp.setUint16(2, 0, false);
        out[i] = tmp.getFloat32(0, false);
      }
      break;
    }
    case 'int64':
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigInt64(i * 8, true));
      break;
    case 'int32':
      for (let i = 0; i < count; i++) out[i] = view.getInt32(i * 4, true);
      break;
    case 'int16':
      for (let i = 0; i < count; i++) out[i] = view.getInt16(i * 2, true);
      break;
    case 'int8':
      for (let i = 0; i < count; i++) out[i] = view.getInt8(i);
      break;
    case 'uint8':
    case 'bool':
      for (let i = 0; i < count; i++) out[i] = view.getUint8(i);
      break;
    default:
      throw new Error(`unsupported dtype ${dtype}`);
  }
  return out;
}

export const DTYPE_BYTES: Readonly<Record<string, number>> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1,
};
