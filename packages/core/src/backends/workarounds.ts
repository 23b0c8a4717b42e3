import * as tf from '@tensorflow/tfjs-core';
import {
  conv2dBackpropFilterComposite,
  conv2dBackpropInputComposite,
  depthwiseBackpropFilterComposite,
  depthwiseBackpropInputComposite,
} from './composite-kernels.js';
import { setWebGpuFusion } from './fused.js';
import { conv2dFilterGrad, depthwiseFilterGrad } from './webgpu/ops.js';

/**
 * The one place where per-backend kernel workarounds are registered. Each entry replaces (or adds)
 * a TensorFlow.js kernel for one backend with a composite of that backend's fast kernels.
 */

type Shape4 = [number, number, number, number];
type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
interface ConvAttrs {
  strides: number | [number, number];
  pad: Pad;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  dilations?: number | [number, number];
  filterShape?: Shape4;
  inputShape?: Shape4;
  dataFormat?: string;
}

/** The kernel a workaround replaced, for the cases it leaves to it. */
type NativeKernel = (inputs: Record<string, tf.Tensor>, attrs: ConvAttrs) => tf.TensorInfo | tf.TensorInfo[];

interface Workaround {
  readonly kernelName: string;
  readonly why: string;
  readonly kernelFunc: (inputs: Record<string, tf.Tensor>, attrs: ConvAttrs, native?: NativeKernel) => tf.Tensor | tf.TensorInfo | tf.TensorInfo[];
}

const isNhwc = (attrs: ConvAttrs): boolean => attrs.dataFormat === undefined || attrs.dataFormat === 'NHWC' || attrs.dataFormat === 'channelsLast';

const WEBGPU_CONV_FILTER: Workaround = {
  kernelName: 'Conv2DBackpropFilter',
  why: 'im2col + split-K batched matmul + one reduction (TF.js: one thread per weight looping over n*h*w)',
  kernelFunc: (inputs, attrs, native) => {
    const x = inputs['x'] as tf.Tensor4D;
    if (!isNhwc(attrs) || x.dtype !== 'float32') return native!(inputs, attrs);
    return conv2dFilterGrad(x, inputs['dy'] as tf.Tensor4D, attrs.filterShape as Shape4, attrs.strides as [number, number], attrs.pad, attrs.dimRoundingMode);
  },
};

const WEBGPU_DW_FILTER: Workaround = {
  kernelName: 'DepthwiseConv2dNativeBackpropFilter',
  why: 'split over output rows + one reduction (TF.js: one thread per weight looping over n*h*w)',
  kernelFunc: (inputs, attrs, native) => {
    const shape = attrs.filterShape as Shape4;
    const [dh, dw] = typeof attrs.dilations === 'number' ? [attrs.dilations, attrs.dilations] : (attrs.dilations ?? [1, 1]);
    const x = inputs['x'] as tf.Tensor4D;
    if (!isNhwc(attrs) || shape[3] !== 1 || dh !== 1 || dw !== 1 || x.dtype !== 'float32') return native!(inputs, attrs);
    return depthwiseFilterGrad(x, inputs['dy'] as tf.Tensor4D, shape, attrs.strides as [number, number], attrs.pad, attrs.dimRoundingMode);
  },
};

function requireNhwc(attrs: ConvAttrs, kernel: string): void {
  if (attrs.dataFormat !== undefined && attrs.dataFormat !== 'NHWC' && attrs.dataFormat !== 'channelsLast') {
    throw new Error(`${kernel}: ferry's composite kernel supports NHWC only`);
  }
}

const CONV_FILTER: Workaround = {
  kernelName: 'Conv2DBackpropFilter',
  why: 'composite of the forward Conv2D (missing on wasm; naive on cpu)',
  kernelFunc: (inputs, attrs) => {
    requireNhwc(attrs, 'Conv2DBackpropFilter');
    return conv2dBackpropFilterComposite(
      inputs['x'] as tf.Tensor4D,
      inputs['dy'] as tf.Tensor4D,
      attrs.filterShape as Shape4,
      attrs.strides,
      attrs.pad,
      attrs.dimRoundingMode,
    );
  },
};

const CONV_INPUT: Workaround = {
  kernelName: 'Conv2DBackpropInput',
  why: 'composite of the forward Conv2D on the zero-dilated gradient (wasm: scalar loop)',
  kernelFunc: (inputs, attrs) => {
    requireNhwc(attrs, 'Conv2DBackpropInput');
    return conv2dBackpropInputComposite(
      attrs.inputShape as Shape4,
      inputs['dy'] as tf.Tensor4D,
      inputs['filter'] as tf.Tensor4D,
      attrs.strides,
      attrs.pad,
      attrs.dimRoundingMode,
    );
  },
};

const DW_FILTER: Workaround = {
  kernelName: 'DepthwiseConv2dNativeBackpropFilter',
  why: 'composite of the forward DepthwiseConv2dNative (missing on wasm)',
  kernelFunc: (inputs, attrs) =>
    depthwiseBackpropFilterComposite(
      inputs['x'] as tf.Tensor4D,
      inputs['dy'] as tf.Tensor4D,
      attrs.filterShape as Shape4,
      attrs.strides,
      attrs.pad,
      attrs.dilations,
      attrs.dimRoundingMode,
    ),
};

const DW_INPUT: Workaround = {
  kernelName: 'DepthwiseConv2dNativeBackpropInput',
  why: 'composite of the forward DepthwiseConv2dNative (missing on wasm)',
  kernelFunc: (inputs, attrs) =>
    depthwiseBackpropInputComposite(
      attrs.inputShape as Shape4,
      inputs['dy'] as tf.Tensor4D,
      inputs['filter'] as tf.Tensor4D,
      attrs.strides,
      attrs.pad,
      attrs.dilations,
      attrs.dimRoundingMode,
    ),
};

/** Per TensorFlow.js backend name, the kernels ferry provides. */
export const WORKAROUNDS: Readonly<Record<string, readonly Workaround[]>> = {
  wasm: [CONV_FILTER, CONV_INPUT, DW_FILTER, DW_INPUT],
  cpu: [CONV_FILTER],
  webgpu: [WEBGPU_CONV_FILTER, WEBGPU_DW_FILTER],
};

/** The lines registerBackendWorkarounds would return for `backendName`, without registering. */
export function describeWorkarounds(backendName: string): string[] {
  const lines = (WORKAROUNDS[backendName] ?? []).map((w) => `${w.kernelName}: ${w.why}`);
  return backendName === 'webgpu' ? [...lines, WEBGPU_INPUT_GRAD_LINE] : lines;
}

const registered = new Map<string, string[]>();
/** What registration replaced, per backend, to put back (see restoreNativeKernels). */
const replaced = new Map<string, tf.KernelConfig[]>();
const absent = new Map<string, string[]>();

/** Registers the workarounds for `backendName` once; returns a line per kernel registered. */
export function registerBackendWorkarounds(backendName: string): string[] {
  const existing = registered.get(backendName);
  if (existing) return existing;
  const lines: string[] = [];
  for (const w of WORKAROUNDS[backendName] ?? []) {
    const previous = tf.getKernel(w.kernelName, backendName);
    if (previous !== undefined) {
      tf.unregisterKernel(w.kernelName, backendName);
      replaced.set(backendName, [...(replaced.get(backendName) ?? []), previous]);
    } else absent.set(backendName, [...(absent.get(backendName) ?? []), w.kernelName]);
    const native: NativeKernel | undefined = previous
      ? (inputs, attrs) => previous.kernelFunc({ inputs, attrs: attrs as unknown as tf.NamedAttrMap, backend: tf.backend() })
      : undefined;
    tf.registerKernel({
      kernelName: w.kernelName,
      backendName,
      // The engine accepts a Tensor as a kernel output (it has a rank), so a composite of ops can
      // stand in for a native kernel; the backward pass runs outside the gradient tape.
      kernelFunc: ({ inputs, attrs }) =>
        w.kernelFunc(inputs as Record<string, tf.Tensor>, attrs as unknown as ConvAttrs, native) as unknown as tf.TensorInfo,
    });
    lines.push(`${w.kernelName}: ${w.why}`);
  }
  registered.set(backendName, lines);
  return lines;
}

/** Puts TensorFlow.js's own kernels back for `backendName` (the "unmodified path" of comparisons). */
export function restoreNativeKernels(backendName: string): void {
  if (!registered.has(backendName)) return;
  for (const name of absent.get(backendName) ?? []) tf.unregisterKernel(name, backendName);
  for (const k of replaced.get(backendName) ?? []) {
    tf.unregisterKernel(k.kernelName, backendName);
    tf.registerKernel(k);
  }
  registered.delete(backendName);
  replaced.delete(backendName);
  absent.delete(backendName);
}

/**
 * ferry's WebGPU fast path on or off: the registered filter-gradient kernels and the fused
 * BatchNorm/SGD programs. Off is TensorFlow.js's own kernels and ops, for "before" measurements
 * and the equivalence tests.
 */
export function setWebGpuFastPath(on: boolean): string[] {
  setWebGpuFusion(on);
  // TF.js's own matmul-tiled input gradient instead of its direct loop (a flag of the backend).
  if (tf.env().getFlags()[NAIVE_TRANSPOSE] !== undefined || on) tf.env().set(NAIVE_TRANSPOSE, !on);
  if (!on) {
    restoreNativeKernels('webgpu');
    return [];
  }
  return [...registerBackendWorkarounds('webgpu'), WEBGPU_INPUT_GRAD_LINE];
}

const NAIVE_TRANSPOSE = 'WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE';
const WEBGPU_INPUT_GRAD_LINE = `Conv2DBackpropInput: TF.js's matmul-tiled program (${NAIVE_TRANSPOSE}=false) instead of its direct loop`;
