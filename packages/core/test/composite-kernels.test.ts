import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, test } from 'vitest';
import { relErr } from '../../../test/helpers/compare.js';
import {
  conv2dFilterGradRef,
  conv2dInputGradRef,
  depthwiseFilterGradRef,
  depthwiseInputGradRef,
} from '../../../test/helpers/conv-ref.js';
import { Rng, selectBackend } from '@ferry/core';
import {
  conv2dBackpropFilterComposite,
  conv2dBackpropInputComposite,
  depthwiseBackpropFilterComposite,
  depthwiseBackpropInputComposite,
} from '@ferry/core/internal';

/** Every (kernel, stride, padding) the zoo's convolutions use, torch padding. */
const CONV_SHAPES = [
  { k: 7, s: 2, p: 3, what: 'stem 7x7/2' },
  { k: 3, s: 1, p: 1, what: '3x3/1' },
  { k: 3, s: 2, p: 1, what: '3x3/2' },
  { k: 1, s: 1, p: 0, what: '1x1/1' },
  { k: 1, s: 2, p: 0, what: 'downsample 1x1/2' },
];
const DEPTHWISE_SHAPES = [
  { k: 3, s: 1, p: 1, what: 'depthwise 3x3/1' },
  { k: 3, s: 2, p: 1, what: 'depthwise 3x3/2' },
];

function random(shape: number[], rng: Rng): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  return Float32Array.from({ length: n }, () => rng.normal());
}

const outSize = (h: number, k: number, s: number, p: number): number => Math.floor((h + 2 * p - k) / s) + 1;

/** The independent reference: float64 loops straight from the definition of the convolution. */
function refGrads(
  x: Float32Array,
  w: Float32Array,
  dy: Float32Array,
  shape: [number, number, number, number],
  k: number,
  s: number,
  p: number,
  co: number,
  depthwise: boolean,
): { dw: Float64Array; dx: Float64Array } {
  const g = {
    x: shape,
    k,
    cout: co,
    stride: s,
    pad: p,
    outH: outSize(shape[1], k, s, p),
    outW: outSize(shape[2], k, s, p),
  };
  return depthwise
    ? { dw: depthwiseFilterGradRef(x, dy, g), dx: depthwiseInputGradRef(dy, w, g) }
    : { dw: conv2dFilterGradRef(x, dy, g), dx: conv2dInputGradRef(dy, w, g) };
}

describe.each(['cpu', 'wasm'] as const)('composite convolution gradients on %s', (backend) => {
  test.each(CONV_SHAPES.flatMap((c) => [7, 8].map((h) => ({ ...c, h }))))(
    'conv $what at $h x $h matches the definition within 1e-4 relative',
    async ({ k, s, p, h }) => {
      await selectBackend(backend);
      const rng = Rng.fromSeed(k * 100 + s * 10 + h);
      const [n, ci, co] = [2, 3, 4];
      const oh = outSize(h, k, s, p);
      const x = random([n, h, h, ci], rng);
      const w = random([k, k, ci, co], rng);
      const dy = random([n, oh, oh, co], rng);
      const want = refGrads(x, w, dy, [n, h, h, ci], k, s, p, co, false);
      const dw = conv2dBackpropFilterComposite(
        tf.tensor4d(x, [n, h, h, ci]),
        tf.tensor4d(dy, [n, oh, oh, co]),
        [k, k, ci, co],
        s,
        p,
      );
      const dx = conv2dBackpropInputComposite(
        [n, h, h, ci],
        tf.tensor4d(dy, [n, oh, oh, co]),
        tf.tensor4d(w, [k, k, ci, co]),
        s,
        p,
      );
      expect(dw.shape).toEqual([k, k, ci, co]);
      expect(dx.shape).toEqual([n, h, h, ci]);
      expect(relErr(await dw.data(), want.dw)).toBeLessThan(1e-4);
      expect(relErr(await dx.data(), want.dx)).toBeLessThan(1e-4);
      // The registered kernels are what tf.grad reaches: check the full gradient path too.
      const [gx, gw] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, p), tf.tensor4d(dy, [n, oh, oh, co]))),
      )([tf.tensor4d(x, [n, h, h, ci]), tf.tensor4d(w, [k, k, ci, co])]);
      expect(relErr(await gw!.data(), want.dw)).toBeLessThan(1e-4);
      expect(relErr(await gx!.data(), want.dx)).toBeLessThan(1e-4);
    },
  );

  test.each(DEPTHWISE_SHAPES.flatMap((c) => [7, 8].map((h) => ({ ...c, h }))))(
    '$what at $h x $h matches the definition within 1e-4 relative',
    async ({ k, s, p, h }) => {
      await selectBackend(backend);
      const rng = Rng.fromSeed(k * 1000 + s * 10 + h);
      const [n, c] = [2, 5];
      const oh = outSize(h, k, s, p);
      const x = random([n, h, h, c], rng);
      const w = random([k, k, c, 1], rng);
      const dy = random([n, oh, oh, c], rng);
      const want = refGrads(x, w, dy, [n, h, h, c], k, s, p, c, true);
      const dw = depthwiseBackpropFilterComposite(
        tf.tensor4d(x, [n, h, h, c]),
        tf.tensor4d(dy, [n, oh, oh, c]),
        [k, k, c, 1],
        s,
        p,
      );
      const dx = depthwiseBackpropInputComposite(
        [n, h, h, c],
        tf.tensor4d(dy, [n, oh, oh, c]),
        tf.tensor4d(w, [k, k, c, 1]),
        s,
        p,
      );
      expect(relErr(await dw.data(), want.dw)).toBeLessThan(1e-4);
      expect(relErr(await dx.data(), want.dx)).toBeLessThan(1e-4);
      const [gx, gw] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, p), tf.tensor4d(dy, [n, oh, oh, c]))),
      )([tf.tensor4d(x, [n, h, h, c]), tf.tensor4d(w, [k, k, c, 1])]);
      expect(relErr(await gw!.data(), want.dw)).toBeLessThan(1e-4);
      expect(relErr(await gx!.data(), want.dx)).toBeLessThan(1e-4);
    },
  );
});
