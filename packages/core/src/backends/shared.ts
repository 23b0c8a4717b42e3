import * as tf from '@tensorflow/tfjs-core';

/** Backends whose tensors live in host memory: reading one back is a copy, not a device round trip. */
const HOST_MEMORY_BACKENDS = new Set(['cpu', 'wasm', 'torch']);

export function tensorsInHostMemory(): boolean {
  return HOST_MEMORY_BACKENDS.has(tf.getBackend());
}

export type Pair = [number, number];

/** A convolution attribute given as one number or [h, w] (strides, dilations), as [h, w]. */
export function pair(v: number | readonly number[]): Pair {
  return typeof v === 'number' ? [v, v] : [v[0] ?? 1, v[1] ?? v[0] ?? 1];
}
