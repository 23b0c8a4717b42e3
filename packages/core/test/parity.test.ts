import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, test } from 'vitest';
import {
  Network,
  adaptBatchNorm,
  batchNormStatNames,
  ArrayBatchSource,
  buildModel,
  nchwToNhwc,
  readNpy,
  readWeightsFile,
  resolveWeights,
  selectBackend,
  type BackendName,
} from '@ferry/core';
import {
  ROUNDING_FLOOR,
  TOLERANCE_FACTOR,
  readNpy64,
  readState64,
  torchRefDir,
  worstRatio,
} from '../../../test/helpers/torch-ref.js';
import {
  fixtureInput,
  fixtureNetwork,
  twoFixtureSteps,
  versusTorchSteps,
} from '../../../test/helpers/torch-training.js';

const ref = (f: string): string => path.join(torchRefDir(), f);
const npy = (f: string) => readNpy(readFileSync(ref(f)), f);

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function evalLogits(arch: string, weightsFile: string): Promise<Float32Array> {
  const model = buildModel(arch, 1000);
  const { tensors } = await readWeightsFile(ref(weightsFile));
  const net = Network.create(model, { seed: 0, weights: resolveWeights(model, tensors, weightsFile) });
  const input = npy(`${arch}_input.npy`);
  const nhwc = nchwToNhwc(input.data, input.shape);
  const logits = net.predict(tf.tensor4d(nhwc.data, nhwc.shape));
  const got = (await logits.data()) as Float32Array;
  logits.dispose();
  net.dispose();
  return got;
}

describe.each<BackendName>(['torch', 'wasm', 'cpu'])('torchvision parity on %s', (backend) => {
  test.each([
    ['resnet18', 'resnet18.pth'],
    ['resnet50', 'resnet50.safetensors'],
    ['mobilenet_v2', 'mobilenet_v2.pth'],
  ])(
    "%s eval-mode logits match torchvision's float64 ones within 16x torch float32's own error (weights from %s)",
    async (arch, file) => {
      await selectBackend(backend);
      const got = await evalLogits(arch, file);
      const want = readNpy64(ref(`${arch}_logits.npy`)).data;
      // torch float32 on the same float32 weights and input: float32's own error on this forward pass
      // (4e-6 to 9e-6 on logits up to 10, about 1e-6 of their scale).
      const torch32 = maxAbsDiff(npy(`${arch}_logits_f32.npy`).data, want);
      const tolerance = TOLERANCE_FACTOR * Math.max(torch32, ROUNDING_FLOOR * maxAbs(want));
      const diff = maxAbsDiff(got, want);
      console.log(JSON.stringify({ test: 'eval-logits', arch, backend, ferry: diff, torch32, ratio: diff / torch32 }));
      expect(diff, JSON.stringify({ torch32, ratio: diff / torch32, maxLogit: maxAbs(want) })).toBeLessThan(tolerance);
      // The reference logits are not trivially small: the comparison means something.
      expect(maxAbs(want)).toBeGreaterThan(0.05);
    },
  );
});

describe.each<BackendName>(['torch', 'wasm'])('resnet18 training steps against torch in float64 on %s', (backend) => {
  // The fixture's training input keeps every ReLU input of the float64 steps clear of zero
  // (test/fixtures/torch_reference.py): a mask flipped by one backend's rounding would move a
  // channel's gradient by far more than any float32 tolerance (seen on torch with 2 threads).
  const protocols: ['finetune' | 'freeze', string][] = [
    ['finetune', 'every parameter learns'],
    ['freeze', "only fc learns, BatchNorm in training mode (the study's freeze)"],
  ];
  test.each(protocols)(
    '%s (%s): two SGD-momentum steps give torch float64 weights, running statistics and losses',
    async (protocol) => {
      await selectBackend(backend);
      const run = await twoFixtureSteps(protocol);
      const { names, worst, losses } = versusTorchSteps(protocol, run);
      console.log(JSON.stringify({ test: 'train-steps', protocol, backend, worst }));
      for (const l of losses) expect(l.error).toBeLessThan(l.tolerance);
      expect(worst.ratio, JSON.stringify(worst)).toBeLessThan(TOLERANCE_FACTOR);
      const { state: got, init } = run;
      if (protocol === 'freeze') {
        // Frozen weights are bitwise what they were; the running statistics moved to the batch's.
        const frozen = names.filter(
          (n) => !n.startsWith('fc.') && !n.endsWith('running_mean') && !n.endsWith('running_var'),
        );
        for (const n of frozen) expect(maxAbsDiff(got.get(n)!.data, init.get(n)!.data), n).toBe(0);
        const moved = maxAbsDiff(got.get('layer4.1.bn2.running_var')!.data, init.get('layer4.1.bn2.running_var')!.data);
        expect(moved).toBeGreaterThan(1e-3);
      }
    },
  );

  test("adapt: one pass without gradients sets the running statistics to torch's cumulative average (momentum=None)", async () => {
    await selectBackend(backend);
    const model = buildModel('resnet18', 10);
    const { net, init } = await fixtureNetwork();
    const a = fixtureInput('train_input.npy');
    const b = fixtureInput('adapt_input.npy');
    const both = new Float32Array(a.data.length + b.data.length);
    both.set(a.data);
    both.set(b.data, a.data.length);
    const source = new ArrayBatchSource(both, new Int32Array(8), [a.shape[1], a.shape[2], 3], 10, {
      batchSize: 4,
      shuffle: false,
    });
    const head = model.stages.findIndex((s) => s.name === model.headStage);
    expect(await adaptBatchNorm(net, source, head, { seed: 0 })).toBe(2);
    const got = await net.exportState();
    const want64 = readState64(ref('adapt_after_f64'));
    const want32 = readState64(ref('adapt_after_f32'));
    const stats = batchNormStatNames(net, 0, head);
    expect(stats.length).toBe(40);
    const worst = worstRatio(got, want64, want32, init, stats);
    expect(worst.ratio, JSON.stringify(worst)).toBeLessThan(TOLERANCE_FACTOR);
    // Weights are untouched.
    for (const n of [...want64.keys()].filter((k) => !stats.includes(k) && !k.endsWith('num_batches_tracked'))) {
      expect(maxAbsDiff(got.get(n)!.data, init.get(n)!.data), n).toBe(0);
    }
    net.dispose();
  });
});
