import os from 'node:os';
import { FerryError } from '@ferry/common';
import * as tf from '@tensorflow/tfjs-core';
import { TorchBackend } from './backend.js';
import { nativeError } from './errors.js';
import { torchKernels } from './kernels.js';
import { loadNative, type NativeInfo, type TorchMemory, type TorchNative } from './native.js';

export { NativeKernelError } from './errors.js';
export { NativeLoadError, type NativeInfo, type TorchMemory } from './native.js';

/** The backend's name in TensorFlow.js's registry. */
export const TORCH_BACKEND = 'torch';

export interface TorchOptions {
  /** Intra-op threads; default: the cores this process may use (os.availableParallelism()). */
  readonly threads?: number;
  /** ATen device: `cpu` (default) or `cuda:N` (needs a CUDA libtorch, FERRY_LIBTORCH_DIR at build). */
  readonly device?: string;
  /** A worker's GPU (its index as libtorch sees it): used when `device` is unset and libtorch has CUDA. */
  readonly preferGpu?: number;
  /**
   * At most this many MiB of tensors (buffers of 1 MiB and more, where nearly all of a network's
   * bytes are) on the CPU; an allocation past it fails its kernel with an out-of-memory error
   * instead of growing the process. Default: no cap.
   */
  readonly memoryLimitMiB?: number;
}

export interface TorchReport extends NativeInfo {
  /** How many kernels the backend registers. */
  readonly kernels: number;
}

let registered: TorchReport | undefined;

/**
 * Loads the addon and registers the `torch` backend and its kernels with TensorFlow.js (once per
 * process; the options of the first call hold). Throws NativeLoadError saying what to install.
 */
export function registerTorchBackend(options: TorchOptions = {}): TorchReport {
  if (registered) return registered;
  const native = loadNative();
  native.SetThreads(Math.max(1, options.threads ?? os.availableParallelism()));
  if (options.memoryLimitMiB !== undefined) limitMemory(native, options.memoryLimitMiB);
  const cuda = native.Info().cuda;
  const device = options.device ?? (options.preferGpu !== undefined && cuda ? `cuda:${options.preferGpu}` : 'cpu');
  if (device !== 'cpu') native.SetDevice(device);
  tf.registerBackend(TORCH_BACKEND, () => new TorchBackend(native), 0);
  const kernels = torchKernels();
  for (const [kernelName, impl] of Object.entries(kernels)) {
    tf.registerKernel({
      kernelName,
      backendName: TORCH_BACKEND,
      kernelFunc: ({ inputs, attrs, backend }) => {
        try {
          return impl(
            inputs as Record<string, tf.TensorInfo>,
            attrs as Record<string, unknown>,
            backend as TorchBackend,
          );
        } catch (e) {
          throw nativeError(kernelName, e);
        }
      },
    });
  }
  registered = { ...native.Info(), kernels: Object.keys(kernels).length };
  return registered;
}

/** The running backend as the torch backend, or an error naming the one that runs. */
function active(): TorchBackend {
  const b = tf.backend();
  if (!(b instanceof TorchBackend)) throw new Error(`the torch backend is not active (${tf.getBackend()} is)`);
  return b;
}

function tensors(b: TorchBackend, ids: number[], dtype: tf.DataType = 'float32'): tf.Tensor[] {
  return ids.map((id) => tf.engine().makeTensorFromTensorInfo(b.wrap(id, dtype)));
}

function call<T>(kernel: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw nativeError(kernel, e);
  }
}

/** What libtorch keeps of a BatchNorm forward in training mode, for its fused backward. */
export interface TorchBatchNorm {
  readonly y: tf.Tensor4D;
  readonly mean: tf.Tensor1D;
  /** Biased batch variance. */
  readonly variance: tf.Tensor1D;
  /** 1 / sqrt(variance + eps). */
  readonly invstd: tf.Tensor1D;
}

/** libtorch's BatchNorm forward with batch statistics (NHWC x; channels_last inside). */
export function torchBatchNormTrain(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
): TorchBatchNorm {
  const b = active();
  const ids = call('BatchNormTrain', () => b.native.BatchNormTrain(b.idOf(x), b.idOf(gamma), b.idOf(beta), eps));
  const [y, mean, variance, invstd] = tensors(b, ids);
  return {
    y: y as tf.Tensor4D,
    mean: mean as tf.Tensor1D,
    variance: variance as tf.Tensor1D,
    invstd: invstd as tf.Tensor1D,
  };
}

/**
 * act(BatchNorm(x) + residual) with running statistics, as one libtorch call whose add and
 * activation run in place on its output: inference only (no gradient; a caller under a tape
 * takes the composite).
 */
export function torchBatchNormInferAct(
  x: tf.Tensor4D,
  mean: tf.Tensor1D,
  variance: tf.Tensor1D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
  residual: tf.Tensor4D | undefined,
  act: 'none' | 'relu' | 'relu6',
): tf.Tensor4D {
  const b = active();
  const id = call('BatchNormInferAct', () =>
    b.native.BatchNormInferAct(
      b.idOf(x),
      b.idOf(mean),
      b.idOf(variance),
      b.idOf(gamma),
      b.idOf(beta),
      eps,
      residual ? b.idOf(residual) : -1,
      ACTIVATIONS[act],
    ),
  );
  return tensors(b, [id])[0] as tf.Tensor4D;
}

const ACTIVATIONS = { none: 0, relu: 1, relu6: 2 } as const;

/** ReLU's / ReLU6's backward from their output: dy where the unit was active (libtorch's one kernel). */
export function torchActivationGrad(dy: tf.Tensor, y: tf.Tensor, act: 'relu' | 'relu6'): tf.Tensor {
  const b = active();
  const id = call('ActivationGrad', () => b.native.ActivationGrad(b.idOf(dy), b.idOf(y), ACTIVATIONS[act]));
  return tensors(b, [id])[0]!;
}

/** torch.optim.SGD's step for one parameter (dampening 0) in two libtorch calls: [buffer, parameter]. */
export function torchSgdMomentum(
  p: tf.Tensor,
  buf: tf.Tensor,
  g: tf.Tensor,
  lr: number,
  momentum: number,
  weightDecay: number,
  nesterov: boolean,
): [tf.Tensor, tf.Tensor] {
  const b = active();
  const ids = call('SgdMomentum', () =>
    b.native.SgdMomentum(b.idOf(p), b.idOf(buf), b.idOf(g), lr, momentum, weightDecay, nesterov),
  );
  return tensors(b, ids) as [tf.Tensor, tf.Tensor];
}

/** libtorch's fused BatchNorm backward (native_batch_norm_backward): [dx, dgamma, dbeta]. */
export function torchBatchNormTrainGrad(
  dy: tf.Tensor4D,
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  saved: Pick<TorchBatchNorm, 'mean' | 'invstd'>,
  eps: number,
): [tf.Tensor4D, tf.Tensor1D, tf.Tensor1D] {
  const b = active();
  const ids = call('BatchNormTrainGrad', () =>
    b.native.BatchNormTrainGrad(b.idOf(dy), b.idOf(x), b.idOf(gamma), b.idOf(saved.mean), b.idOf(saved.invstd), eps),
  );
  return tensors(b, ids) as [tf.Tensor4D, tf.Tensor1D, tf.Tensor1D];
}

/**
 * Mean softmax cross-entropy over a batch with integer labels, and its gradient with respect to
 * the logits, from libtorch's fused log_softmax / nll_loss kernels: [loss, dlogits].
 */
export function torchSoftmaxCrossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D): [tf.Scalar, tf.Tensor2D] {
  const b = active();
  const ids = call('SoftmaxCrossEntropy', () => b.native.SoftmaxCrossEntropy(b.idOf(logits), b.idOf(labels)));
  return tensors(b, ids) as [tf.Scalar, tf.Tensor2D];
}

/** What the addon holds now: live tensors and its allocator's blocks (the running backend must be torch). */
export function torchMemory(): TorchMemory {
  return active().native.MemoryStats();
}

/**
 * Caps the CPU tensor memory of the running torch backend at `mib` MiB (undefined: no cap), as
 * TorchOptions.memoryLimitMiB does at registration; tensors already held are kept.
 */
export function setTorchMemoryLimit(mib: number | undefined): void {
  const { native } = active();
  if (mib === undefined) native.SetMemoryLimit(0);
  else limitMemory(native, mib);
}

function limitMemory(native: TorchNative, mib: number): void {
  if (!(mib > 0))
    throw new FerryError(
      'FERRY_ERR_INVALID_ARGUMENT',
      `the torch memory limit must be a positive number of MiB, not ${mib}`,
    );
  native.SetMemoryLimit(Math.round(mib * 2 ** 20));
}

/** Whether the torch backend is the running TensorFlow.js backend. */
export function torchActive(): boolean {
  return tf.getBackend() === TORCH_BACKEND;
}
