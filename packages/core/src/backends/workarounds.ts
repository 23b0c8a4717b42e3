import * as tf from '@tensorflow/tfjs-core';
import {
  conv2dBackpropFilterComposite,
  conv2dBackpropInputComposite,
  depthwiseBackpropFilterComposite,
  depthwiseBackpropInputComposite,
} from './composite-kernels.js';

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

interface Workaround {
  readonly kernelName: string;
  readonly why: string;
  readonly kernelFunc: (inputs: Record<string, tf.Tensor>, attrs: ConvAttrs) => tf.Tensor;
}

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
};

/** The lines registerBackendWorkarounds would return for `backendName`, without registering. */
export function describeWorkarounds(backendName: string): string[] {
  return (WORKAROUNDS[backendName] ?? []).map((w) => `${w.kernelName}: ${w.why}`);
}

const registered = new Map<string, string[]>();

/** Registers the workarounds for `backendName` once; returns a line per kernel registered. */
export function registerBackendWorkarounds(backendName: string): string[] {
  const existing = registered.get(backendName);
  if (existing) return existing;
  const lines: string[] = [];
  for (const w of WORKAROUNDS[backendName] ?? []) {
    if (tf.getKernel(w.kernelName, backendName) !== undefined) tf.unregisterKernel(w.kernelName, backendName);
    tf.registerKernel({
      kernelName: w.kernelName,
      backendName,
      // The engine accepts a Tensor as a kernel output (it has a rank), so a composite of ops can
      // stand in for a native kernel; the backward pass runs outside the gradient tape.
      kernelFunc: ({ inputs, attrs }) =>
        w.kernelFunc(inputs as Record<string, tf.Tensor>, attrs as unknown as ConvAttrs) as unknown as tf.TensorInfo,
    });
    lines.push(`${w.kernelName}: ${w.why}`);
  }
  registered.set(backendName, lines);
  return lines;
}
