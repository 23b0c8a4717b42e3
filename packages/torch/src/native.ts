import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** What the addon holds (native/cpu_allocator.h): tensors, and its caching allocator's large blocks. */
export interface TorchMemory {
  /** Tensors (slots) alive. */
  readonly liveTensors: number;
  /** Bytes of large blocks (>= 1 MiB) held by tensors. */
  readonly inUseBytes: number;
  /** Bytes of large blocks free in the cache (reused by the next requests that fit). */
  readonly cachedBytes: number;
  readonly peakInUseBytes: number;
  readonly blocks: number;
  readonly hits: number;
  readonly misses: number;
}

/**
 * The addon's functions (native/ferry_torch.cc), typed. Tensors are slot ids owned by the addon;
 * every id returned must reach `Free` exactly once (the backend's disposeData does it).
 */
export interface TorchNative {
  Create(values: Float32Array | Int32Array | Uint8Array, shape: number[], dtype: number): number;
  Read(id: number): Float32Array | Int32Array | Uint8Array;
  Free(id: number): void;
  Shape(id: number): number[];
  MemoryStats(): TorchMemory;
  BinaryOp(op: number, a: number, b: number, outDtype: number): number;
  UnaryOp(op: number, x: number): number;
  Step(x: number, alpha: number): number;
  Cast(x: number, dtype: number): number;
  Clip(x: number, min: number, max: number): number;
  Where(cond: number, a: number, b: number): number;
  LeakyRelu(x: number, alpha: number): number;
  Prelu(x: number, alpha: number): number;
  Reshape(x: number, shape: number[]): number;
  Transpose(x: number, perm: number[]): number;
  StridedSlice(x: number, begin: number[], end: number[], strides: number[]): number;
  Concat(ids: number[], axis: number): number;
  Stack(ids: number[], axis: number): number;
  Split(x: number, sizes: number[], axis: number): number[];
  Pad(x: number, paddings: number[], value: number): number;
  Tile(x: number, reps: number[]): number;
  Flip(x: number, dims: number[]): number;
  Fill(shape: number[], value: number, dtype: number): number;
  Range(start: number, stop: number, step: number, dtype: number): number;
  OneHot(indices: number, depth: number, on: number, off: number, dtype: number): number;
  Gather(x: number, indices: number, axis: number): number;
  ReduceOp(op: number, x: number, axes: number[], keepDims: boolean): number;
  ArgMinMax(x: number, axis: number, max: boolean): number;
  Cumsum(x: number, axis: number, exclusive: boolean, reverse: boolean): number;
  Softmax(x: number): number;
  LogSoftmax(x: number): number;
  MatMul(a: number, b: number, transposeA: boolean, transposeB: boolean): number;
  Conv2d(x: number, filter: number, depthwise: boolean, geom: number[]): number;
  Conv2dBackpropInput(dy: number, filter: number, depthwise: boolean, geom: number[], inputShape: number[]): number;
  Conv2dBackpropFilter(x: number, dy: number, depthwise: boolean, geom: number[], filterShape: number[]): number;
  MaxPool(x: number, kernel: number[], geom: number[]): number;
  MaxPoolGrad(dy: number, x: number, y: number, kernel: number[], geom: number[]): number;
  AvgPool(x: number, kernel: number[], geom: number[]): number;
  AvgPoolGrad(dy: number, x: number, kernel: number[], geom: number[]): number;
  BatchNormInfer(x: number, mean: number, variance: number, scale: number, offset: number, eps: number): number;
  /** act(BatchNorm(x) + residual) in inference mode; residual -1 for none; act 0 none, 1 relu, 2 relu6. */
  BatchNormInferAct(
    x: number,
    mean: number,
    variance: number,
    scale: number,
    offset: number,
    eps: number,
    residual: number,
    act: number,
  ): number;
  BatchNormTrain(x: number, gamma: number, beta: number, eps: number): [number, number, number, number];
  /** ReLU (1) / ReLU6 (2) backward from the output y. */
  ActivationGrad(dy: number, y: number, act: number): number;
  /** One SGD-momentum step: [buffer, parameter]. */
  SgdMomentum(
    p: number,
    buf: number,
    g: number,
    lr: number,
    momentum: number,
    weightDecay: number,
    nesterov: boolean,
  ): [number, number];
  BatchNormTrainGrad(
    dy: number,
    x: number,
    gamma: number,
    mean: number,
    invstd: number,
    eps: number,
  ): [number, number, number];
  SoftmaxCrossEntropy(logits: number, labels: number): [number, number];
  SetThreads(n: number): void;
  /** Caps the bytes tensors may hold in large blocks (0: no cap). */
  SetMemoryLimit(bytes: number): void;
  SetDevice(device: string): void;
  Info(): NativeInfo;
}

export interface NativeInfo {
  readonly version: string;
  readonly mkldnnVersion: string;
  readonly threads: number;
  readonly mkldnn: boolean;
  readonly cuda: boolean;
  readonly device: string;
  readonly parallel: string;
}

/** Why the addon did not load, with the one command that fixes it. */
export class NativeLoadError extends Error {}

const ADDON = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'build', 'Release', 'ferry_torch.node');

let loaded: TorchNative | undefined;

/** Loads the addon once (lazily: importing this package never touches libtorch). */
export function loadNative(): TorchNative {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  try {
    loaded = require(ADDON) as TorchNative;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'MODULE_NOT_FOUND') {
      throw new NativeLoadError(
        'the native addon is not built (libtorch was not found at install): apt-get install libtorch-dev && npm rebuild @ferry/torch',
      );
    }
    const first = (e instanceof Error ? e.message : String(e)).split('\n')[0] ?? '';
    throw new NativeLoadError(
      `the native addon did not load (${first.slice(0, 200)}): npm rebuild @ferry/torch (against the libtorch it runs with)`,
    );
  }
  return loaded;
}
