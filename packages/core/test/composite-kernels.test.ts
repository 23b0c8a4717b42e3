import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, test } from 'vitest';
import { dotBoundRatio, filterGradBounded, inputGradBounded, type Bounded } from '../../../test/helpers/conv-ref.js';
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

/** The float64 references of dW and dX with float32's bound on each (test/helpers/conv-ref.ts). */
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
): { dw: Bounded; dx: Bounded } {
  const g = {
    x: shape,
    k,
    cout: co,
    stride: s,
    pad: p,
    outH: outSize(shape[1], k, s, p),
    outW: outSize(shape[2], k, s, p),
  };
  return { dw: filterGradBounded(x, dy, g, depthwise), dx: inputGradBounded(dy, w, g, depthwise) };
}

/** Every element within float32's own bound for its dot product (dotBoundRatio <= 1). */
function expectWithinDotBound(got: ArrayLike<number>, ref: Bounded, what: string): void {
  const worst = dotBoundRatio(got, ref);
  expect(
    worst.ratio,
    `${what}: |got - float64| / (gamma_${ref.terms} sum |terms|), worst at ${worst.at}`,
  ).toBeLessThanOrEqual(1);
}

describe.each(['cpu', 'wasm'] as const)('composite convolution gradients on %s', (backend) => {
  test.each(CONV_SHAPES.flatMap((c) => [7, 8].map((h) => ({ ...c, h }))))(
    "conv $what at $h x $h matches the definition within float32's dot-product bound, every element",
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
      expectWithinDotBound(await dw.data(), want.dw, 'dW');
      expectWithinDotBound(await dx.data(), want.dx, 'dX');
      // The registered kernels are what tf.grad reaches: check the full gradient path too.
      const [gx, gw] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, p), tf.tensor4d(dy, [n, oh, oh, co]))),
      )([tf.tensor4d(x, [n, h, h, ci]), tf.tensor4d(w, [k, k, ci, co])]);
      expectWithinDotBound(await gw!.data(), want.dw, 'tf.grads dW');
      expectWithinDotBound(await gx!.data(), want.dx, 'tf.grads dX');
    },
  );

  test.each(DEPTHWISE_SHAPES.flatMap((c) => [7, 8].map((h) => ({ ...c, h }))))(
    "$what at $h x $h matches the definition within float32's dot-product bound, every element",
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
      expectWithinDotBound(await dw.data(), want.dw, 'dW');
      expectWithinDotBound(await dx.data(), want.dx, 'dX');
      const [gx, gw] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, p), tf.tensor4d(dy, [n, oh, oh, c]))),
      )([tf.tensor4d(x, [n, h, h, c]), tf.tensor4d(w, [k, k, c, 1])]);
      expectWithinDotBound(await gw!.data(), want.dw, 'tf.grads dW');
      expectWithinDotBound(await gx!.data(), want.dx, 'tf.grads dX');
    },
  );
});
