import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, test } from 'vitest';
import { ArrayBatchSource, DEFAULT_TRAIN_CONFIG, Network, Rng, Trainer, buildModel, selectBackend } from '@ferry/core';
import { batchNormInfer, batchNormTrain, sgdMomentumStep } from '@ferry/core/internal';
import { setTorchMemoryLimit, torchMemory } from '@ferry/torch';

/**
 * The torch backend's kernels against TensorFlow.js's pure-JavaScript cpu backend (the reference
 * implementation of every kernel's semantics), its errors, and its native memory over many cells.
 * Model numerics against torchvision are parity.test.ts's.
 */

const rng = Rng.fromSeed(11);
const random = (shape: number[]): Float32Array =>
  Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal());

/** Runs `f` on a backend with fresh tensors from the same data; returns every output's values. */
async function on(backend: 'cpu' | 'torch', f: () => tf.Tensor | tf.Tensor[]): Promise<Float32Array[]> {
  await selectBackend(backend);
  const out = tf.tidy(f);
  const list = Array.isArray(out) ? out : [out];
  const values = list.map((t) => Float32Array.from(t.dataSync()));
  tf.dispose(list);
  return values;
}

/** Largest |a - b| relative to the reference's largest magnitude (float32 rounding on both sides). */
function relDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  let m = 1e-30;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

describe('the torch backend', () => {
  beforeAll(async () => {
    await selectBackend('torch');
  });

  const x4 = random([2, 9, 9, 3]);
  const w4 = random([3, 3, 3, 4]);
  const dw = random([3, 3, 3, 2]);
  const a2 = random([5, 7]);
  const b2 = random([7, 6]);
  const cases: [string, () => tf.Tensor | tf.Tensor[]][] = [
    [
      'add/mul/sub/div with broadcast',
      () => {
        const a = tf.tensor(a2, [5, 7]);
        const b = tf.tensor(a2.slice(0, 7), [7]);
        return [a.add(b), a.mul(b), a.sub(b), a.div(b.abs().add(1))];
      },
    ],
    [
      'matMul with transposes',
      () => [
        tf.matMul(tf.tensor2d(a2, [5, 7]), tf.tensor2d(b2, [7, 6])),
        tf.matMul(tf.tensor2d(a2, [5, 7]), tf.tensor2d(a2, [5, 7]), true, false),
        tf.matMul(tf.tensor2d(a2, [5, 7]), tf.tensor2d(a2, [5, 7]), false, true),
      ],
    ],
    [
      'conv2d (same, stride 2; valid, dilation 2) and depthwise',
      () => {
        const x = tf.tensor4d(x4, [2, 9, 9, 3]);
        return [
          tf.conv2d(x, tf.tensor4d(w4, [3, 3, 3, 4]), 2, 'same'),
          tf.conv2d(x, tf.tensor4d(w4, [3, 3, 3, 4]), 1, 'valid', 'NHWC', 2),
          tf.depthwiseConv2d(x, tf.tensor4d(dw, [3, 3, 3, 2]), 1, 'same'),
        ];
      },
    ],
    [
      'conv2d gradients (input and filter)',
      () => {
        const x = tf.tensor4d(x4, [2, 9, 9, 3]);
        const w = tf.tensor4d(w4, [3, 3, 3, 4]);
        const g = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
          tf
            .conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, 'same')
            .square()
            .sum(),
        )([x, w]);
        return g;
      },
    ],
    [
      'max/avg pool and their gradients',
      () => {
        const x = tf.tensor4d(x4, [2, 9, 9, 3]);
        const [gm] = tf.grads((a: tf.Tensor) =>
          tf
            .maxPool(a as tf.Tensor4D, 3, 2, 'same')
            .square()
            .sum(),
        )([x]);
        const [ga] = tf.grads((a: tf.Tensor) =>
          tf
            .avgPool(a as tf.Tensor4D, 2, 2, 'valid')
            .square()
            .sum(),
        )([x]);
        return [tf.maxPool(x, 3, 2, 'same'), tf.avgPool(x, 2, 2, 'valid'), gm!, ga!];
      },
    ],
    [
      'reductions, softmax, argmax, cumsum',
      () => {
        const a = tf.tensor2d(a2, [5, 7]);
        return [
          a.sum(1),
          a.mean(0),
          a.max(1),
          a.min(),
          a.softmax(),
          a.logSoftmax(),
          a.argMax(1).toFloat(),
          a.cumsum(1),
        ];
      },
    ],
    [
      'shapes: transpose, slice, concat, split, pad, tile, reverse, gather',
      () => {
        const a = tf.tensor2d(a2, [5, 7]);
        const [p, q] = tf.split(a, [3, 4], 1);
        return [
          a.transpose(),
          a.slice([1, 2], [3, 4]),
          tf.concat([a, a], 0),
          p!,
          q!,
          a.pad(
            [
              [1, 0],
              [0, 2],
            ],
            0.5,
          ),
          a.tile([2, 1]),
          a.reverse(1),
          tf.gather(a, tf.tensor1d([4, 0, 2], 'int32'), 0),
        ];
      },
    ],
    [
      'element-wise functions, comparisons, where, cast, clip',
      () => {
        const a = tf.tensor2d(a2, [5, 7]);
        return [
          a.exp(),
          a.abs().log(),
          a.abs().sqrt(),
          a.relu(),
          a.relu6(),
          a.sigmoid(),
          a.tanh(),
          tf.where(a.greater(0), a, a.neg()),
          a.clipByValue(-0.5, 0.5),
          a.greaterEqual(0.1).toFloat(),
          a.round(),
        ];
      },
    ],
    [
      "inference BatchNorm with the residual add and the activation (libtorch's one call; ops on cpu)",
      () => {
        const x = tf.tensor4d(x4, [2, 9, 9, 3]);
        const r = tf.tensor4d(
          x4.map((v) => v * 0.5 - 0.1),
          [2, 9, 9, 3],
        );
        const c = (v: number[]) => tf.tensor1d(v);
        const stats = { mean: c([0.1, -0.2, 0.3]), variance: c([0.5, 1.5, 2.0]) };
        const [gamma, beta] = [c([1.2, 0.7, -0.9]), c([0.05, -0.3, 0.4])];
        return [
          batchNormInfer(x, stats, gamma, beta, 1e-5, 'none', undefined),
          batchNormInfer(x, stats, gamma, beta, 1e-5, 'relu', r),
          batchNormInfer(x.mul(4), stats, gamma, beta, 1e-5, 'relu6', undefined),
        ];
      },
    ],
    [
      "training BatchNorm + residual + ReLU / ReLU6 and their gradients (libtorch's threshold/hardtanh backward; a mask and a product on cpu)",
      () => {
        const x = tf.tensor4d(x4, [2, 9, 9, 3]);
        const r = tf.tensor4d(
          x4.map((v) => 0.3 - v),
          [2, 9, 9, 3],
        );
        const weight = tf.tensor4d(
          x4.map((v) => Math.sin(v)),
          [2, 9, 9, 3],
        );
        const [gamma, beta] = [tf.tensor1d([1.2, 0.7, -0.9]), tf.tensor1d([0.05, -0.3, 0.4])];
        return (['relu', 'relu6'] as const).flatMap((act) =>
          tf.grads((a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) =>
            tf.sum(
              tf.mul(batchNormTrain(a.mul(3) as tf.Tensor4D, g as tf.Tensor1D, b as tf.Tensor1D, 1e-5, act, r), weight),
            ),
          )([x, gamma, beta]),
        );
      },
    ],
    [
      'one SGD-momentum step (weight decay, nesterov or not)',
      () => {
        const [p, buf, g] = [a2, a2.map((v) => v * 0.5), a2.map((v) => Math.cos(v))].map((d) => tf.tensor2d(d, [5, 7]));
        return [
          ...sgdMomentumStep(p!, buf!, g!, 0.01, 0.9, 0, false),
          ...sgdMomentumStep(p!, buf!, g!, 0.1, 0.8, 1e-3, true),
        ];
      },
    ],
  ];

  test.each(cases)("%s: the cpu backend's values within float32 rounding", async (_name, f) => {
    const want = await on('cpu', f);
    const got = await on('torch', f);
    got.forEach((g, i) => expect(relDiff(g, want[i]!), `output ${i}`).toBeLessThan(1e-5));
  });

  test('a libtorch error is a coded ferry error naming the kernel, and the backend goes on', async () => {
    await selectBackend('torch');
    const a = tf.tensor2d([1, 2, 3, 4], [2, 2]);
    let caught: unknown;
    try {
      tf.gather(a, tf.tensor1d([5], 'int32'), 0).dataSync();
    } catch (e) {
      caught = e;
    }
    expect(caught).toMatchObject({ code: 'FERRY_ERR_NATIVE_KERNEL' });
    expect((caught as Error).message).toMatch(/^torch backend, kernel GatherV2: .*index/i);
    // The failure left nothing behind and the next kernel runs.
    expect(Array.from(a.add(1).dataSync())).toEqual([2, 3, 4, 5]);
    a.dispose();
  });

  test('past the memory cap: out of memory, coded, in the kernel that asked; a half-built network leaves nothing behind', async () => {
    await selectBackend('torch');
    const tensorsBefore = tf.memory().numTensors;
    const before = torchMemory();
    setTorchMemoryLimit(before.inUseBytes / 2 ** 20 + 32);
    try {
      // ResNet18's weights are 45 MB, nearly all in buffers of 1 MiB and more: they pass the cap.
      expect(() => Network.create(buildModel('resnet18', 10), { seed: 1 })).toThrow(
        /^torch backend, kernel Create: out of memory: \d+ MiB more would pass the torch backend's limit of \d+ MiB/,
      );
      expect(tf.memory().numTensors).toBe(tensorsBefore);
      expect(torchMemory()).toMatchObject({ liveTensors: before.liveTensors, inUseBytes: before.inUseBytes });
      // A kernel's own output is refused the same way (tidy frees what the failed expression made).
      expect(() => tf.tidy(() => tf.matMul(tf.ones([2048, 2048]), tf.ones([2048, 2048])).add(1))).toThrow(
        /^torch backend, kernel (MatMul|BatchMatMul|Add|Fill): out of memory/,
      );
      // A small network still fits, and trains.
      const net = Network.create(buildModel('resnet_tiny', 2), { seed: 1 });
      net.dispose();
    } finally {
      setTorchMemoryLimit(undefined);
    }
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });

  test('a kernel the backend lacks fails naming it: never a silent fallback', async () => {
    await selectBackend('torch');
    const a = tf.tensor2d([1, 2, 3, 4], [2, 2]);
    expect(() => tf.einsum('ij,jk->ik', a, a)).toThrow(/Einsum.*torch/);
    a.dispose();
  });

  test('100 training cells on resnet_tiny: no tensor left behind, no native memory growth', async () => {
    await selectBackend('torch');
    // 128 px, batch 8: the stem's activations pass 1 MiB, so the caching allocator serves them.
    const size = 128;
    const classes = 3;
    const n = 16;
    const x = random([n, size, size, 3]);
    const labels = Int32Array.from({ length: n }, (_, i) => i % classes);
    const cell = async (seed: number): Promise<void> => {
      const net = Network.create(buildModel('resnet_tiny', classes), { seed });
      const source = new ArrayBatchSource(x, labels, [size, size, 3], classes, { batchSize: 8, shuffle: false });
      const trainer = new Trainer({
        network: net,
        config: { ...DEFAULT_TRAIN_CONFIG, epochs: 1, seed },
        train: source,
        val: source,
      });
      await trainer.run();
      trainer.dispose();
      net.dispose();
    };
    for (let i = 0; i < 5; i++) await cell(i); // warm-up: kernels' one-time state, the allocator's cache
    const before = { tf: tf.memory().numTensors, native: torchMemory() };
    for (let i = 5; i < 100; i++) await cell(i);
    const after = { tf: tf.memory().numTensors, native: torchMemory() };
    console.log(JSON.stringify({ test: 'torch-100-cells', before, after }));
    expect(after.tf).toBe(before.tf);
    expect(after.native.liveTensors).toBe(before.native.liveTensors);
    expect(after.native.inUseBytes).toBe(before.native.inUseBytes);
    // The cache reuses the same blocks cell after cell: none mapped after the warm-up.
    expect(before.native.blocks).toBeGreaterThan(0);
    expect(after.native.blocks).toBe(before.native.blocks);
    expect(after.native.hits).toBeGreaterThan(before.native.hits);
  });
});
