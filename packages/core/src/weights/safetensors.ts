import { WeightsCorruptError } from '../errors.js';
import { DTYPE_BYTES, decodeElements, numel, type HostTensor, type StateDict } from './host-tensor.js';

const ST_TO_DTYPE: Readonly<Record<string, string>> = {
  F32: 'float32',
  F64: 'float64',
  F16: 'float16',
  BF16: 'bfloat16',
  I64: 'int64',
  I32: 'int32',
  I16: 'int16',
  I8: 'int8',
  U8: 'uint8',
  BOOL: 'bool',
};

export interface SafetensorsFile {
  readonly tensors: StateDict;
  readonly metadata: Readonly<Record<string, string>>;
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** Reads a .safetensors file: 8-byte little-endian header length, JSON header, raw buffers. */
export function readSafetensors(bytes: Uint8Array, file: string): SafetensorsFile {
  if (bytes.length < 8) throw new WeightsCorruptError(file, 'too short for a safetensors file');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen <= 0 || 8 + headerLen > bytes.length) {
    throw new WeightsCorruptError(file, `safetensors header length ${headerLen} exceeds the file (truncated or not safetensors)`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen))) as Record<string, unknown>;
  } catch (e) {
    throw new WeightsCorruptError(file, 'safetensors header is not valid JSON', { cause: e });
  }
  const dataStart = 8 + headerLen;
  const tensors: StateDict = new Map();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = (raw ?? {}) as Record<string, string>;
      continue;
    }
    const e = raw as HeaderEntry;
    const dtype = ST_TO_DTYPE[e.dtype];
    if (!dtype) throw new WeightsCorruptError(file, `tensor ${name}: unsupported dtype ${e.dtype}`);
    const [begin, end] = e.data_offsets;
    const n = numel(e.shape);
    if (end - begin !== n * (DTYPE_BYTES[dtype] ?? 4)) {
      throw new WeightsCorruptError(file, `tensor ${name}: ${end - begin} bytes for shape [${e.shape.join(', ')}] ${e.dtype}`);
    }
    if (dataStart + end > bytes.length) throw new WeightsCorruptError(file, `tensor ${name} is truncated`);
    tensors.set(name, { dtype, shape: e.shape, data: decodeElements(bytes, dataStart + begin, n, dtype) });
  }
  return { tensors, metadata };
}

/** Writes float32 tensors (and string metadata) as a .safetensors buffer. */
export function writeSafetensors(tensors: ReadonlyMap<string, HostTensor>, metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header['__metadata__'] = metadata;
  let offset = 0;
  for (const [name, t] of tensors) {
    const len = t.data.length * 4;
    header[name] = { dtype: 'F32', shape: [...t.shape], data_offsets: [offset, offset + len] };
    offset += len;
  }
  let json = JSON.stringify(header);
  // Pad the header so that tensor data starts 8-byte aligned, as the reference writer does.
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let p = 8 + headerBytes.length;
  for (const t of tensors.values()) {
    Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, p);
    p += t.data.byteLength;
  }
  return out;
}
