import * as tf from '@tensorflow/tfjs-core';
import {
  conv2dBackpropFilterComposite,
  conv2dBackpropInputComposite,
  depthwiseBackpropFilterComposite,
  depthwiseBackpropInputComposite,
} from './composite-kernels.js';
import { setWebGpuFusion } from './fused.js';
import { pair } from './shared.js';
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

/**
 * One kernel ferry provides for a backend: its own kernel function, or a TensorFlow.js flag that
 * selects a better kernel of the backend's own (`flag` set to `value`).
 */
type Workaround =
  | {
      readonly kernelName: string;
      readonly why: string;
      readonly kernelFunc: (
        inputs: Record<string, tf.Tensor>,
        attrs: ConvAttrs,
        native?: NativeKernel,
      ) => tf.Tensor | tf.TensorInfo | tf.TensorInfo[];
    }
  | { readonly kernelName: string; readonly why: string; readonly flag: string; readonly value: boolean };

const isNhwc = (attrs: ConvAttrs): boolean =>
  attrs.dataFormat === undefined || attrs.dataFormat === 'NHWC' || attrs.dataFormat === 'channelsLast';

const WEBGPU_CONV_FILTER: Workaround = {
  kernelName: 'Conv2DBackpropFilter',
  why: 'im2col + split-K batched matmul + one reduction (TF.js: one thread per weight looping over n*h*w)',
  kernelFunc: (inputs, attrs, native) => {
    const x = inputs['x'] as tf.Tensor4D;
    if (!isNhwc(attrs) || x.dtype !== 'float32') return native!(inputs, attrs);
    return conv2dFilterGrad(
      x,
      inputs['dy'] as tf.Tensor4D,
      attrs.filterShape as Shape4,
      attrs.strides as [number, number],
      attrs.pad,
      attrs.dimRoundingMode,
    );
  },
};

const WEBGPU_DW_FILTER: Workaround = {
  kernelName: 'DepthwiseConv2dNativeBackpropFilter',
  why: 'split over output rows + one reduction (TF.js: one thread per weight looping over n*h*w)',
  kernelFunc: (inputs, attrs, native) => {
    const shape = attrs.filterShape as Shape4;
    const [dh, dw] = pair(attrs.dilations ?? 1);
    const x = inputs['x'] as tf.Tensor4D;
    if (!isNhwc(attrs) || shape[3] !== 1 || dh !== 1 || dw !== 1 || x.dtype !== 'float32')
      return native!(inputs, attrs);
    return depthwiseFilterGrad(
      x,
      inputs['dy'] as tf.Tensor4D,
      shape,
      attrs.strides as [number, number],
      attrs.pad,
      attrs.dimRoundingMode,
    );
  },
};

const WEBGPU_CONV_INPUT: Workaround = {
  kernelName: 'Conv2DBackpropInput',
  why: "TF.js's matmul-tiled program (WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE=false) instead of its direct loop",
  flag: 'WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE',
  value: false,
};

function requireNhwc(attrs: ConvAttrs, kernel: string): void {
  if (!isNhwc(attrs)) throw new Error(`${kernel}: ferry's composite kernel supports NHWC only`);
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
  webgpu: [WEBGPU_CONV_FILTER, WEBGPU_DW_FILTER, WEBGPU_CONV_INPUT],
};

/** The lines registerBackendWorkarounds would return for `backendName`, without registering. */
export function describeWorkarounds(backendName: string): string[] {
  return (WORKAROUNDS[backendName] ?? []).map((w) => `${w.kernelName}: ${w.why}`);
}

const registered = new Map<string, string[]>();
/** Per backend, how to put back what registration replaced (see restoreNativeKernels). */
const undo = new Map<string, (() => void)[]>();

/** Registers the workarounds for `backendName` once; returns a line per kernel registered. */
export function registerBackendWorkarounds(backendName: string): string[] {
  const existing = registered.get(backendName);
  if (existing) return existing;
  const undos: (() => void)[] = [];
  for (const w of WORKAROUNDS[backendName] ?? []) {
    if ('flag' in w) {
      const before = tf.env().get(w.flag);
      tf.env().set(w.flag, w.value);
      undos.push(() => tf.env().set(w.flag, before));
      continue;
    }
    const previous = tf.getKernel(w.kernelName, backendName);
    if (previous !== undefined) tf.unregisterKernel(w.kernelName, backendName);
    undos.push(() => {
      tf.unregisterKernel(w.kernelName, backendName);
      if (previous !== undefined) tf.registerKernel(previous);
    });
    const native: NativeKernel | undefined = previous
      ? (inputs, attrs) =>
          previous.kernelFunc({ inputs, attrs: attrs as unknown as tf.NamedAttrMap, backend: tf.backend() })
      : undefined;
    tf.registerKernel({
      kernelName: w.kernelName,
      backendName,
      // The engine accepts a Tensor as a kernel output (it has a rank), so a composite of ops can
      // stand in for a native kernel; the backward pass runs outside the gradient tape.
      kernelFunc: ({ inputs, attrs }) =>
        w.kernelFunc(
          inputs as Record<string, tf.Tensor>,
          attrs as unknown as ConvAttrs,
          native,
        ) as unknown as tf.TensorInfo,
    });
  }
  const lines = describeWorkarounds(backendName);
  registered.set(backendName, lines);
  undo.set(backendName, undos);
  return lines;
}

/** Puts TensorFlow.js's own kernels back for `backendName` (the "unmodified path" of comparisons). */
export function restoreNativeKernels(backendName: string): void {
  for (const u of (undo.get(backendName) ?? []).reverse()) u();
  registered.delete(backendName);
  undo.delete(backendName);
}

/**
 * ferry's WebGPU fast path on or off: the registered kernels and the fused BatchNorm/SGD
 * programs. Off is TensorFlow.js's own kernels and ops, for "before" measurements and the
 * equivalence tests.
 */
export function setWebGpuFastPath(on: boolean): string[] {
  setWebGpuFusion(on);
  if (on) return registerBackendWorkarounds('webgpu');
  restoreNativeKernels('webgpu');
  return [];
}
