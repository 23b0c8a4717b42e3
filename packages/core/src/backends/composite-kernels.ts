import * as tf from '@tensorflow/tfjs-core';
import { InvalidArgumentError } from '../errors.js';
import { pair, tensorsInHostMemory } from './shared.js';

/**
 * Convolution gradients composed from forward convolutions. Backends whose forward convolution is
 * fast but whose gradient kernels are missing (wasm) or slow (wasm's scalar Conv2DBackpropInput,
 * cpu's naive loops) get these registered in their place (see workarounds.ts). Pure functions of
 * TensorFlow.js ops: they run, and are tested, on any backend.
 */

type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;

function requireUnitDilation(dilations: number | readonly number[] | undefined, what: string): void {
  if (dilations === undefined) return;
  const [dh, dw] = pair(dilations);
  if (dh !== 1 || dw !== 1) throw new InvalidArgumentError(`${what}: composite gradient supports dilation 1 only`);
}

/** Inserts (s-1) zeros between the rows and columns of `dy` (the transposed convolution's input). */
function zeroDilate(dy: tf.Tensor4D, sh: number, sw: number): tf.Tensor4D {
  if (sh === 1 && sw === 1) return dy;
  const [n, oh, ow, c] = dy.shape;
  const expanded = tf.reshape(dy, [n, oh, 1, ow, 1, c]);
  const padded = tf.pad(expanded, [
    [0, 0],
    [0, 0],
    [0, sh - 1],
    [0, 0],
    [0, sw - 1],
    [0, 0],
  ]);
  const flat = tf.reshape(padded, [n, oh * sh, ow * sw, c]) as tf.Tensor4D;
  return tf.slice(flat, [0, 0, 0, 0], [n, (oh - 1) * sh + 1, (ow - 1) * sw + 1, c]);
}

/**
 * Flips a filter's spatial axes. A row gather on the [kh*kw, rest] view: wasm's Reverse kernel is
 * a generic strided loop that costs more than the convolution it feeds.
 */
function flipSpatial(filter: tf.Tensor4D): tf.Tensor4D {
  const [kh, kw, a, b] = filter.shape;
  if (kh === 1 && kw === 1) return filter;
  if (tensorsInHostMemory()) {
    // Data already lives in host memory: kh*kw block copies are memcpy speed.
    const src = filter.dataSync() as Float32Array;
    const out = new Float32Array(src.length);
    const block = a * b;
    for (let i = 0; i < kh * kw; i++) out.set(src.subarray(i * block, (i + 1) * block), (kh * kw - 1 - i) * block);
    return tf.tensor4d(out, [kh, kw, a, b]);
  }
  const rows = tf.reshape(filter, [kh * kw, a * b]);
  const order = tf.tensor1d(
    Array.from({ length: kh * kw }, (_, i) => kh * kw - 1 - i),
    'int32',
  );
  return tf.reshape(tf.gather(rows, order), [kh, kw, a, b]) as tf.Tensor4D;
}

type ExplicitPad = [[number, number], [number, number], [number, number], [number, number]];

/**
 * The padding of a filter gradient's stride-1 convolution of x with dy (dilated by the forward
 * stride): the forward's top and left, and at the bottom and right what makes the output at
 * least the filter's size (cropToFilter takes the rest off). Shared by the dense and the
 * depthwise filter gradients.
 */
function filterGradPad(info: tf.backend_util.Conv2DInfo, xShape: readonly number[]): ExplicitPad {
  const [, h, w] = xShape as [number, number, number, number];
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, padInfo } = info;
  const bottom = kh + sh * (info.outHeight - 1) - h - padInfo.top;
  const right = kw + sw * (info.outWidth - 1) - w - padInfo.left;
  return [
    [0, 0],
    [padInfo.top, Math.max(bottom, 0)],
    [padInfo.left, Math.max(right, 0)],
    [0, 0],
  ];
}

/** The first kh x kw positions of a filter gradient's output (its axes 1 and 2). */
function cropToFilter(out: tf.Tensor4D, kh: number, kw: number): tf.Tensor4D {
  if (out.shape[1] === kh && out.shape[2] === kw) return out;
  return tf.slice(out, [0, 0, 0, 0], [out.shape[0], kh, kw, out.shape[3]]);
}

/**
 * dW for y = conv2d(x, W): a stride-1 convolution of x (batch and channel axes swapped) with dy
 * as the filter, dilated by the forward stride.
 */
export function conv2dBackpropFilterComposite(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: readonly [number, number, number, number],
  strides: number | readonly number[],
  pad: Pad,
  dimRoundingMode?: 'floor' | 'round' | 'ceil',
): tf.Tensor4D {
  return tf.tidy(() => {
    const [kh, kw, ci, co] = filterShape;
    const [sh, sw] = pair(strides);
    const info = tf.backend_util.computeConv2DInfo(x.shape, [kh, kw, ci, co], [sh, sw], 1, pad, dimRoundingMode);
    const xT = tf.transpose(x, [3, 1, 2, 0]); // [ci, H, W, n]
    const dyT = tf.transpose(dy, [1, 2, 0, 3]); // [OH, OW, n, co]
    const out = tf.conv2d(xT, dyT, 1, filterGradPad(info, x.shape), 'NHWC', [sh, sw]); // [ci, >=kh, >=kw, co]
    return tf.transpose(cropToFilter(out, kh, kw), [1, 2, 0, 3]);
  });
}

/** dX for y = conv2d(x, W): the zero-dilated dy convolved with the flipped, in/out-swapped W. */
export function conv2dBackpropInputComposite(
  inputShape: readonly [number, number, number, number],
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  strides: number | readonly number[],
  pad: Pad,
  dimRoundingMode?: 'floor' | 'round' | 'ceil',
): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, h, w, ci] = inputShape;
    const [kh, kw] = filter.shape;
    const [sh, sw] = pair(strides);
    const info = tf.backend_util.computeConv2DInfo([n, h, w, ci], filter.shape, [sh, sw], 1, pad, dimRoundingMode);
    const dyD = zeroDilate(dy, sh, sw);
    const top = kh - 1 - info.padInfo.top;
    const left = kw - 1 - info.padInfo.left;
    const bottom = h + kh - 1 - dyD.shape[1] - top;
    const right = w + kw - 1 - dyD.shape[2] - left;
    const wT = tf.transpose(flipSpatial(filter), [0, 1, 3, 2]) as tf.Tensor4D;
    const input =
      top < 0 || left < 0 ? tf.slice(dyD, [0, Math.max(-top, 0), Math.max(-left, 0), 0], [-1, -1, -1, -1]) : dyD;
    const out = tf.conv2d(input, wT, 1, [
      [0, 0],
      [Math.max(top, 0), Math.max(bottom, 0)],
      [Math.max(left, 0), Math.max(right, 0)],
      [0, 0],
    ]);
    return out.shape[1] === h && out.shape[2] === w ? out : tf.slice(out, [0, 0, 0, 0], [n, h, w, ci]);
  });
}

/** dW for a depthwise convolution (channel multiplier 1): batch folded into the channel axis. */
export function depthwiseBackpropFilterComposite(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: readonly [number, number, number, number],
  strides: number | readonly number[],
  pad: Pad,
  dilations?: number | readonly number[],
  dimRoundingMode?: 'floor' | 'round' | 'ceil',
): tf.Tensor4D {
  requireUnitDilation(dilations, 'DepthwiseConv2dNativeBackpropFilter');
  const [kh, kw, c, m] = filterShape;
  if (m !== 1)
    throw new InvalidArgumentError('DepthwiseConv2dNativeBackpropFilter: composite supports channel multiplier 1 only');
  return tf.tidy(() => {
    const [sh, sw] = pair(strides);
    const [n, h, w] = x.shape;
    const info = tf.backend_util.computeConv2DInfo(x.shape, [kh, kw, c, m], [sh, sw], 1, pad, dimRoundingMode, true);
    const xT = tf.reshape(tf.transpose(x, [1, 2, 3, 0]), [1, h, w, c * n]) as tf.Tensor4D;
    const dyT = tf.reshape(tf.transpose(dy, [1, 2, 3, 0]), [info.outHeight, info.outWidth, c * n, 1]) as tf.Tensor4D;
    const out = tf.depthwiseConv2d(xT, dyT, 1, filterGradPad(info, x.shape), 'NHWC', [sh, sw]);
    return tf.reshape(tf.sum(tf.reshape(cropToFilter(out, kh, kw), [kh, kw, c, n]), 3), [kh, kw, c, 1]);
  });
}

/** dX for a depthwise convolution: the zero-dilated dy depthwise-convolved with the flipped filter. */
export function depthwiseBackpropInputComposite(
  inputShape: readonly [number, number, number, number],
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  strides: number | readonly number[],
  pad: Pad,
  dilations?: number | readonly number[],
  dimRoundingMode?: 'floor' | 'round' | 'ceil',
): tf.Tensor4D {
  requireUnitDilation(dilations, 'DepthwiseConv2dNativeBackpropInput');
  if (filter.shape[3] !== 1)
    throw new InvalidArgumentError('DepthwiseConv2dNativeBackpropInput: composite supports channel multiplier 1 only');
  return tf.tidy(() => {
    const [n, h, w, c] = inputShape;
    const [kh, kw] = filter.shape;
    const [sh, sw] = pair(strides);
    const info = tf.backend_util.computeConv2DInfo([n, h, w, c], filter.shape, [sh, sw], 1, pad, dimRoundingMode, true);
    const dyD = zeroDilate(dy, sh, sw);
    const top = kh - 1 - info.padInfo.top;
    const left = kw - 1 - info.padInfo.left;
    const bottom = h + kh - 1 - dyD.shape[1] - top;
    const right = w + kw - 1 - dyD.shape[2] - left;
    const flipped = flipSpatial(filter);
    const input =
      top < 0 || left < 0 ? tf.slice(dyD, [0, Math.max(-top, 0), Math.max(-left, 0), 0], [-1, -1, -1, -1]) : dyD;
    const out = tf.depthwiseConv2d(input, flipped, 1, [
      [0, 0],
      [Math.max(top, 0), Math.max(bottom, 0)],
      [Math.max(left, 0), Math.max(right, 0)],
      [0, 0],
    ]);
    return out.shape[1] === h && out.shape[2] === w ? out : tf.slice(out, [0, 0, 0, 0], [n, h, w, c]);
  });
}
