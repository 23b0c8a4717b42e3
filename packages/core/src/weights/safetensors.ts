import { LIMITS, limits } from '@ferry/common';
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

/** The safetensors format's own limit on the JSON header (100 MB). */
export const MAX_SAFETENSORS_HEADER_BYTES = 100_000_000;

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * Reads a .safetensors file: 8-byte little-endian header length, JSON header, raw buffers. Every
 * header field is checked (types, non-negative offsets inside the data, element counts) before a
 * tensor is allocated, so a malformed file is a FERRY_ERR_WEIGHTS_CORRUPT naming the tensor, not a
 * JavaScript error or a read of header bytes as data.
 */
export function readSafetensors(bytes: Uint8Array, file: string): SafetensorsFile {
  if (bytes.length < 8) throw new WeightsCorruptError(file, 'too short for a safetensors file');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen <= 0 || headerLen > MAX_SAFETENSORS_HEADER_BYTES || 8 + headerLen > bytes.length) {
    throw new WeightsCorruptError(
      file,
      `safetensors header length ${headerLen} exceeds the file or the format's 100 MB limit (truncated or not safetensors)`,
    );
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  } catch (e) {
    throw new WeightsCorruptError(file, 'safetensors header is not valid JSON', { cause: e });
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header))
    throw new WeightsCorruptError(file, 'safetensors header is not a JSON object');
  const dataStart = 8 + headerLen;
  const dataBytes = bytes.length - dataStart;
  const tensors: StateDict = new Map();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Object.values(raw).some((v) => typeof v !== 'string')) {
        throw new WeightsCorruptError(file, '__metadata__ must map names to strings');
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = (typeof raw === 'object' && raw !== null ? raw : {}) as Partial<Record<keyof HeaderEntry, unknown>>;
    const dtype = typeof e.dtype === 'string' ? ST_TO_DTYPE[e.dtype] : undefined;
    if (!dtype) throw new WeightsCorruptError(file, `tensor ${name}: unsupported dtype ${JSON.stringify(e.dtype)}`);
    if (!Array.isArray(e.shape) || !e.shape.every(isCount))
      throw new WeightsCorruptError(file, `tensor ${name}: shape must be a list of non-negative integers`);
    const shape = e.shape as number[];
    const n = numel(shape);
    const max = limits().maxTensorElements;
    if (n > max)
      throw new WeightsCorruptError(
        file,
        `tensor ${name}: ${n} elements is more than the ${max} allowed (${LIMITS.maxTensorElements.flag})`,
      );
    const offsets = e.data_offsets;
    const [begin, end] =
      Array.isArray(offsets) && offsets.length === 2 && offsets.every(isCount)
        ? (offsets as [number, number])
        : [-1, -1];
    if (begin < 0 || begin > end)
      throw new WeightsCorruptError(file, `tensor ${name}: data_offsets must be [begin, end] with 0 <= begin <= end`);
    if (end - begin !== n * (DTYPE_BYTES[dtype] ?? 4)) {
      throw new WeightsCorruptError(
        file,
        `tensor ${name}: ${end - begin} bytes for shape [${shape.join(', ')}] ${String(e.dtype)}`,
      );
    }
    if (end > dataBytes) throw new WeightsCorruptError(file, `tensor ${name} is truncated`);
    tensors.set(name, { dtype, shape, data: decodeElements(bytes, dataStart + begin, n, dtype) });
  }
  return { tensors, metadata };
}

/** Writes float32 tensors (and string metadata) as a .safetensors buffer. */
export function writeSafetensors(
  tensors: ReadonlyMap<string, HostTensor>,
  metadata: Record<string, string> = {},
): Buffer {
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
