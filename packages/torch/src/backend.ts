import * as tf from '@tensorflow/tfjs-core';
import type { TorchNative } from './native.js';
import { nativeError } from './errors.js';

type DataId = object;

interface Entry {
  /** The addon's slot id. */
  id: number;
  dtype: tf.DataType;
  refCount: number;
}

const DTYPE_CODE: Readonly<Record<string, number>> = { float32: 0, int32: 1, bool: 2 };

/** The addon's dtype code for a TensorFlow.js dtype; float32, int32 and bool only. */
export function dtypeCode(dtype: tf.DataType): number {
  const code = DTYPE_CODE[dtype];
  if (code === undefined) throw new Error(`the torch backend has no ${dtype} tensors (float32, int32, bool only)`);
  return code;
}

/**
 * A TensorFlow.js backend whose tensors are ATen tensors held by the addon. Tensor data crosses
 * into JavaScript only through read/readSync (a copy) and write (a copy); between kernels it stays
 * native. Reference counting follows TensorFlow.js's own backends (incRef on a shared dataId,
 * disposeData decrements, the slot is freed at zero), so `tf.memory()` and `tf.tidy` hold.
 */
export class TorchBackend extends tf.KernelBackend {
  private readonly data = new Map<DataId, Entry>();

  constructor(readonly native: TorchNative) {
    super();
  }

  /** The slot id behind a TensorFlow.js tensor (what kernels pass to the addon). */
  idOf(t: tf.TensorInfo): number {
    const e = this.data.get(t.dataId);
    if (!e) throw new Error('torch backend: a tensor of another backend reached a torch kernel');
    return e.id;
  }

  /** A TensorInfo owning a fresh slot id (refCount 1). */
  wrap(id: number, dtype: tf.DataType): tf.TensorInfo {
    const dataId = {};
    this.data.set(dataId, { id, dtype, refCount: 1 });
    return { dataId, shape: this.native.Shape(id), dtype };
  }

  override write(values: tf.backend_util.BackendValues, shape: number[], dtype: tf.DataType): DataId {
    const dataId = {};
    this.data.set(dataId, { id: this.create(values, shape, dtype), dtype, refCount: 1 });
    return dataId;
  }

  override move(
    dataId: DataId,
    values: tf.backend_util.BackendValues,
    shape: number[],
    dtype: tf.DataType,
    refCount: number,
  ): void {
    this.data.set(dataId, { id: this.create(values, shape, dtype), dtype, refCount });
  }

  private create(values: tf.backend_util.BackendValues | null, shape: number[], dtype: tf.DataType): number {
    const code = dtypeCode(dtype);
    const n = shape.reduce((a, b) => a * b, 1);
    let typed: Float32Array | Int32Array | Uint8Array;
    if (values === null || values === undefined) {
      typed = dtype === 'float32' ? new Float32Array(n) : dtype === 'int32' ? new Int32Array(n) : new Uint8Array(n);
    } else if (dtype === 'float32') {
      typed = values instanceof Float32Array ? values : Float32Array.from(values as ArrayLike<number>);
    } else if (dtype === 'int32') {
      typed = values instanceof Int32Array ? values : Int32Array.from(values as ArrayLike<number>);
    } else {
      typed = values instanceof Uint8Array ? values : Uint8Array.from(values as ArrayLike<number>);
    }
    try {
      return this.native.Create(typed, shape, code);
    } catch (e) {
      // A tensor from JavaScript (weights, a batch) is an allocation too: out of memory is coded here as in a kernel.
      throw nativeError('Create', e);
    }
  }

  makeTensorInfo(
    shape: number[],
    dtype: tf.DataType,
    values?: tf.backend_util.BackendValues | string[],
  ): tf.TensorInfo {
    const dataId = this.write((values ?? null) as tf.backend_util.BackendValues, shape, dtype);
    return { dataId, shape, dtype };
  }

  override readSync(dataId: DataId): tf.backend_util.BackendValues {
    const e = this.data.get(dataId);
    if (!e) throw new Error('torch backend: read of a disposed tensor');
    return this.native.Read(e.id);
  }

  override read(dataId: DataId): Promise<tf.backend_util.BackendValues> {
    return Promise.resolve(this.readSync(dataId));
  }

  override refCount(dataId: DataId): number {
    return this.data.get(dataId)?.refCount ?? 0;
  }

  override incRef(dataId: DataId): void {
    const e = this.data.get(dataId);
    if (e) e.refCount++;
  }

  override disposeData(dataId: DataId, force = false): boolean {
    const e = this.data.get(dataId);
    if (!e) return true;
    if (!force) {
      e.refCount--;
      if (e.refCount > 0) return false;
    }
    this.native.Free(e.id);
    this.data.delete(dataId);
    return true;
  }

  override numDataIds(): number {
    return this.data.size;
  }

  override memory(): { unreliable: boolean } {
    return { unreliable: false };
  }

  override timerAvailable(): boolean {
    return true;
  }

  override async time(f: () => void): Promise<tf.TimingInfo> {
    // Kernels run synchronously on the calling thread (CPU), so wall time is kernel time.
    const start = performance.now();
    f();
    const ms = performance.now() - start;
    return { kernelMs: ms, wallMs: ms };
  }

  override floatPrecision(): 32 {
    return 32;
  }

  override epsilon(): number {
    return 1e-7;
  }

  override dispose(): void {
    for (const e of this.data.values()) this.native.Free(e.id);
    this.data.clear();
  }
}
