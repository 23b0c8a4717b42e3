import { LIMITS, limits } from '@ferry/common';
import { UnsupportedFormatError, WeightsCorruptError } from '../errors.js';
import { DTYPE_BYTES, decodeElements, numel, type HostTensor, type StateDict } from './host-tensor.js';
import { PickleError, PyDict, PyGlobal, unpickle, type Reducer } from './pickle.js';
import { ZipFormatError, ZipReader } from './zip.js';

const STORAGE_DTYPES: Readonly<Record<string, string>> = {
  FloatStorage: 'float32',
  DoubleStorage: 'float64',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
};

interface StorageRef {
  readonly kind: 'storage';
  readonly key: string;
  readonly dtype: string;
}

interface TensorRef {
  readonly kind: 'tensor';
  readonly storage: StorageRef;
  readonly offset: number;
  readonly shape: readonly number[];
  readonly stride: readonly number[];
}

function isTensorRef(v: unknown): v is TensorRef {
  return typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'tensor';
}

const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/**
 * The allow-list (torch's `weights_only=True`): the callables a state_dict's pickle may invoke, and
 * the storage types it may name. Anything else is refused by the unpickler.
 */
const TORCH_REDUCERS: ReadonlyMap<string, Reducer> = new Map<string, Reducer>([
  [
    'collections.OrderedDict',
    (args) => {
      const d = new PyDict();
      const items = args[0];
      if (Array.isArray(items)) for (const kv of items) if (Array.isArray(kv)) d.set(kv[0], kv[1]);
      return d;
    },
  ],
  ['torch._utils._rebuild_tensor_v2', rebuildTensor],
  ['torch._utils._rebuild_tensor', rebuildTensor],
  ['torch._utils._rebuild_parameter', (args) => args[0]],
  ['torch._utils._rebuild_parameter_with_state', (args) => args[0]],
]);
const TORCH_VALUES: ReadonlySet<string> = new Set([
  ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`),
  'torch._utils._rebuild_tensor_v2',
]);

/** A persistent id of torch.save: ('storage', storage type, key, location, size). */
function storageRef(pid: unknown): StorageRef {
  if (!Array.isArray(pid) || pid[0] !== 'storage') throw new PickleError(`unknown persistent id ${String(pid)}`);
  const type = pid[1];
  const dtype = type instanceof PyGlobal ? STORAGE_DTYPES[type.name] : undefined;
  if (!dtype)
    throw new PickleError(`unsupported storage type ${type instanceof PyGlobal ? type.qualified : String(type)}`);
  return { kind: 'storage', key: String(pid[2]), dtype };
}

/** The archive, its pickle's name and the folder prefix its entries share; refuses what is not one. */
function openArchive(bytes: Uint8Array, file: string): { zip: ZipReader; pkl: string; prefix: string } {
  if (!ZipReader.isZip(bytes)) {
    if (LEGACY_MAGIC.every((b, i) => bytes[i] === b)) {
      throw new UnsupportedFormatError(
        `${file}: legacy (pre-1.6) torch serialization; re-save it with torch>=1.6: torch.save(torch.load(f), f2)`,
      );
    }
    throw new WeightsCorruptError(file, 'not a torch .pth archive (no ZIP header); truncated or another format?');
  }
  let zip: ZipReader;
  try {
    zip = new ZipReader(bytes);
  } catch (e) {
    throw new WeightsCorruptError(file, `corrupt .pth archive: ${(e as Error).message}`, { cause: e });
  }
  const pkl = [...zip.entries.keys()].find((n) => n.endsWith('/data.pkl') || n === 'data.pkl');
  if (pkl === undefined) throw new WeightsCorruptError(file, 'archive has no data.pkl; not a torch.save file');
  const prefix = pkl.slice(0, pkl.length - 'data.pkl'.length);
  const byteorder = zip.entries.has(`${prefix}byteorder`)
    ? new TextDecoder().decode(zip.read(`${prefix}byteorder`))
    : 'little';
  if (byteorder.trim() !== 'little') throw new UnsupportedFormatError(`${file}: big-endian tensors are not supported`);
  return { zip, pkl, prefix };
}

/**
 * Reads a torch.save zip archive (torch >= 1.6) holding a state_dict, or a dict with a
 * `state_dict`/`model` entry; a DataParallel `module.` prefix is removed.
 */
export function readPth(bytes: Uint8Array, file: string): StateDict {
  const { zip, pkl, prefix } = openArchive(bytes, file);
  let root: unknown;
  try {
    root = unpickle(zip.read(pkl), { reducers: TORCH_REDUCERS, values: TORCH_VALUES, persistentLoad: storageRef });
  } catch (e) {
    if (e instanceof PickleError || e instanceof ZipFormatError) {
      throw new WeightsCorruptError(file, `cannot read the pickled state_dict: ${e.message}`, { cause: e });
    }
    throw e;
  }
  const dict = findStateDict(root);
  if (!dict) throw new WeightsCorruptError(file, 'the file holds no state_dict (a dict of tensors)');

  const storages = new Map<string, Uint8Array>();
  const out: StateDict = new Map();
  for (const [rawKey, value] of dict) {
    if (!isTensorRef(value)) continue;
    const name = String(rawKey).replace(/^module\./, '');
    let data = storages.get(value.storage.key);
    if (!data) {
      try {
        data = zip.read(`${prefix}data/${value.storage.key}`);
      } catch (e) {
        throw new WeightsCorruptError(file, `tensor ${name}: its storage is missing or truncated`, { cause: e });
      }
      storages.set(value.storage.key, data);
    }
    out.set(name, materialise(value, data, file, name));
  }
  return out;
}

function rebuildTensor(args: readonly unknown[]): TensorRef {
  const [storage, offset, shape, stride] = args;
  const storageOk =
    typeof storage === 'object' && storage !== null && (storage as { kind?: unknown }).kind === 'storage';
  if (
    !storageOk ||
    !Array.isArray(shape) ||
    !Array.isArray(stride) ||
    (typeof offset !== 'number' && typeof offset !== 'bigint')
  ) {
    throw new PickleError('_rebuild_tensor needs (storage, offset, shape tuple, stride tuple)');
  }
  return {
    kind: 'tensor',
    storage: storage as StorageRef,
    offset: Number(offset),
    shape: (shape as readonly unknown[]).map(Number),
    stride: (stride as readonly unknown[]).map(Number),
  };
}

function findStateDict(root: unknown): Map<unknown, unknown> | undefined {
  if (!(root instanceof Map)) return undefined;
  if ([...root.values()].some(isTensorRef)) return root;
  for (const key of ['state_dict', 'model', 'model_state_dict', 'net']) {
    const inner = root.get(key);
    if (inner instanceof Map && [...inner.values()].some(isTensorRef)) return inner;
  }
  return undefined;
}

const isIndex = (v: number): boolean => Number.isSafeInteger(v) && v >= 0;

function materialise(t: TensorRef, storage: Uint8Array, file: string, name: string): HostTensor {
  const size = DTYPE_BYTES[t.storage.dtype] ?? 4;
  // Checked before anything is allocated: what the pickle declares is not trusted.
  if (!isIndex(t.offset) || !t.shape.every(isIndex) || !t.stride.every(isIndex) || t.stride.length !== t.shape.length) {
    throw new WeightsCorruptError(
      file,
      `tensor ${name}: offset, shape [${t.shape.join(', ')}] and stride [${t.stride.join(', ')}] must be non-negative integers of one length`,
    );
  }
  const n = numel(t.shape);
  // A parameter never repeats elements of its storage (a stride-0 "expanded" view does): a tensor
  // with more elements than its storage holds is refused rather than blown up in memory.
  if (n > limits().maxTensorElements)
    throw new WeightsCorruptError(
      file,
      `tensor ${name}: ${n} elements is more than the ${limits().maxTensorElements} allowed (${LIMITS.maxTensorElements.flag})`,
    );
  if (n * size > storage.length) {
    throw new WeightsCorruptError(
      file,
      `tensor ${name}: shape [${t.shape.join(', ')}] has ${n} elements, more than its ${storage.length}-byte storage holds`,
    );
  }
  // Contiguous row-major strides read straight through; anything else is gathered element by element.
  const contiguous = t.shape.every((_, i) => t.shape[i] === 1 || t.stride[i] === numel(t.shape.slice(i + 1)));
  let maxIndex = t.offset;
  t.shape.forEach((d, i) => (maxIndex += (d - 1) * (t.stride[i] ?? 0)));
  if (n > 0 && (maxIndex + 1) * size > storage.length) {
    throw new WeightsCorruptError(file, `tensor ${name} needs more bytes than its storage holds (truncated file?)`);
  }
  if (contiguous) {
    return {
      dtype: t.storage.dtype,
      shape: t.shape,
      data: decodeElements(storage, t.offset * size, n, t.storage.dtype),
    };
  }
  const all = decodeElements(storage, 0, storage.length / size, t.storage.dtype);
  const out = new Float32Array(n);
  const idx = new Array<number>(t.shape.length).fill(0);
  for (let k = 0; k < n; k++) {
    let src = t.offset;
    for (let d = 0; d < idx.length; d++) src += idx[d]! * t.stride[d]!;
    out[k] = all[src]!;
    for (let d = idx.length - 1; d >= 0; d--) {
      idx[d]!++;
      if (idx[d]! < t.shape[d]!) break;
      idx[d] = 0;
    }
  }
  return { dtype: t.storage.dtype, shape: t.shape, data: out };
}
