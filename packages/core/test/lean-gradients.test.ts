import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, test } from 'vitest';
import { Rng, selectBackend } from '@ferry/core';
import { installLeanGradients } from '@ferry/core/internal';

/**
 * A small graph with what a backward walk must get right: a tensor used twice (a residual add),
 * a node with several outputs (split), a custom gradient, pooling, matmul and a loss; `probe`
 * sits at the input, so its gradient runs last and sees what the walk still holds.
 */
function graph(vars: tf.Variable[], x: tf.Tensor4D, held: number[]): tf.Scalar {
  const [w1, w2, fc] = vars as [tf.Variable<tf.Rank.R4>, tf.Variable<tf.Rank.R4>, tf.Variable<tf.Rank.R2>];
  const probe = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const t = args[0] as tf.Tensor4D;
    return {
      value: t.clone(),
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) => {
        held.push(tf.memory().numBytes);
        return (dy as tf.Tensor).clone();
      },
    };
  });
  const a = tf.relu(tf.conv2d(probe(x.mul(w1.sum())) as tf.Tensor4D, w1, 1, 'same'));
  const b = tf.conv2d(a, w2, 1, 'same').add(a).relu() as tf.Tensor4D; // `a` feeds two nodes
  const [l, r] = tf.split(b, 2, 3); // two outputs
  const pooled = tf.maxPool(l!.mul(r!.sigmoid()) as tf.Tensor4D, 2, 2, 'valid').mean([1, 2]) as tf.Tensor2D;
  const logits = pooled.matMul(fc);
  return tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d([0, 2, 1, 3], 'int32'), 4), logits) as tf.Scalar;
}

describe('lean gradients', () => {
  const rng = Rng.fromSeed(3);
  const rand = (shape: number[]): tf.Tensor =>
    tf.tensor(
      Float32Array.from({ length: shape.reduce((p, q) => p * q) }, () => rng.normal() * 0.3),
      shape,
    );
  let vars: tf.Variable[];
  let x: tf.Tensor4D;
  beforeAll(async () => {
    await selectBackend('cpu');
    vars = [rand([3, 3, 3, 8]), rand([3, 3, 8, 8]), rand([4, 4])].map((t) => tf.variable(t));
    x = rand([4, 8, 8, 3]) as tf.Tensor4D;
  });

  const run = (): { loss: number; grads: Float32Array[]; held: number; leaked: number } => {
    const before = tf.memory().numTensors;
    const held: number[] = [];
    const { value, grads } = tf.variableGrads(() => graph(vars, x, held), vars);
    const out = {
      loss: value.dataSync()[0]!,
      grads: vars.map((v) => grads[v.name]!.dataSync() as Float32Array),
      held: held[0]!,
      leaked: 0,
    };
    tf.dispose([value, ...Object.values(grads)]);
    return { ...out, leaked: tf.memory().numTensors - before };
  };

  test("gradients bit-identical to TensorFlow.js's own walk, nothing leaked, and the backward's end holds less", () => {
    const own = run(); // before the install: TensorFlow.js's walk
    installLeanGradients();
    installLeanGradients(); // idempotent
    const lean = run();
    expect(lean.loss).toBe(own.loss);
    lean.grads.forEach((g, i) => expect(Array.from(g)).toEqual(Array.from(own.grads[i]!)));
    expect([own.leaked, lean.leaked]).toEqual([0, 0]);
    // At the last node's backward TF.js still holds every saved activation and gradient; the lean
    // walk holds the frontier's gradient, the variables' and the inputs (153 kB vs 20 kB here).
    console.log(JSON.stringify({ held: [own.held, lean.held] }));
    expect(lean.held).toBeLessThan(0.25 * own.held);
  });

  test('a dy passed in is not disposed; second-order gradients keep working', () => {
    installLeanGradients();
    const dy = tf.scalar(2);
    const { grads } = tf.engine().gradients(() => vars[2]!.square().sum() as tf.Scalar, [vars[2]!], dy);
    expect(dy.isDisposed).toBe(false);
    expect(Array.from(grads[0]!.dataSync())).toEqual(Array.from(vars[2]!.mul(4).dataSync()));
    const d2 = tf.grad(tf.grad((t: tf.Tensor) => t.pow(3).sum()))(tf.tensor1d([1, 2]));
    expect(Array.from(d2.dataSync())).toEqual([6, 12]);
    tf.dispose([dy, d2, ...grads]);
  });
});
