import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, test } from 'vitest';
import {
  Network,
  Trainer,
  ArrayBatchSource,
  DEFAULT_TRAIN_CONFIG,
  buildModel,
  nchwToNhwc,
  readNpy,
  readWeightsFile,
  resolveWeights,
  selectBackend,
  type BackendName,
} from '@ferry/core';
import { torchRefDir } from '../../../test/helpers/torch-ref.js';

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

async function evalLogits(arch: string, weightsFile: string): Promise<{ got: Float32Array; want: Float32Array }> {
  const model = buildModel(arch, 1000);
  const { tensors } = await readWeightsFile(ref(weightsFile));
  const net = Network.create(model, { seed: 0, weights: resolveWeights(model, tensors, weightsFile) });
  const input = npy(`${arch}_input.npy`);
  const nhwc = nchwToNhwc(input.data, input.shape);
  const logits = net.predict(tf.tensor4d(nhwc.data, nhwc.shape));
  const got = (await logits.data()) as Float32Array;
  logits.dispose();
  net.dispose();
  return { got, want: npy(`${arch}_logits.npy`).data };
}

describe.each<BackendName>(['wasm', 'cpu'])('torchvision parity on %s', (backend) => {
  test.each([
    ['resnet18', 'resnet18.pth'],
    ['resnet50', 'resnet50.safetensors'],
    ['mobilenet_v2', 'mobilenet_v2.pth'],
  ])('%s eval-mode logits match torchvision within 1e-4 (weights from %s)', async (arch, file) => {
    await selectBackend(backend);
    const { got, want } = await evalLogits(arch, file);
    const diff = maxAbsDiff(got, want);
    expect(diff, `max |logit| ${maxAbs(want)}`).toBeLessThan(1e-4);
    // The reference logits are not trivially small: the comparison means something.
    expect(maxAbs(want)).toBeGreaterThan(0.05);
  });
});

test('resnet18: two SGD-momentum steps in train mode give torch\'s weights and running stats within 1e-4 relative', async () => {
  await selectBackend('wasm');
  const model = buildModel('resnet18', 10);
  const init = await readWeightsFile(ref('train_resnet18_init.pth'));
  const net = Network.create(model, { seed: 0, weights: resolveWeights(model, init.tensors, 'init') });
  const input = npy('train_input.npy');
  const nhwc = nchwToNhwc(input.data, input.shape);
  const labels = Int32Array.from(npy('train_labels.npy').data);
  const source = new ArrayBatchSource(nhwc.data, labels, [nhwc.shape[1], nhwc.shape[2], 3], 10, { batchSize: 4, shuffle: false });
  const trainer = new Trainer({
    network: net,
    config: { ...DEFAULT_TRAIN_CONFIG, epochs: 1, lr: 0.01, momentum: 0.9, weightDecay: 1e-4 },
    train: source,
    val: source,
  });
  const wantLosses = JSON.parse(readFileSync(ref('train_losses.json'), 'utf8')) as number[];
  const batch = { x: nhwc.data, shape: nhwc.shape, labels };
  for (let i = 0; i < 2; i++) {
    const r = await trainer.trainStep(batch, 0.01);
    expect(Math.abs(r.lossSum / 4 - wantLosses[i]!)).toBeLessThan(1e-4);
  }
  const after = (await readWeightsFile(ref('train_resnet18_after.safetensors'))).tensors;
  const got = await net.exportState();
  let worst = { name: '', rel: 0 };
  let worstUpdate = { name: '', rel: 0 };
  const initState = init.tensors;
  for (const [name, want] of after) {
    if (name.endsWith('num_batches_tracked')) continue;
    const g = got.get(name)!.data;
    const scale = Math.max(maxAbs(want.data), 1e-12);
    const rel = maxAbsDiff(g, want.data) / scale;
    if (rel > worst.rel) worst = { name, rel };
    // The change itself must match too, not only the (much larger) weights.
    const w0 = initState.get(name)!.data;
    const dWant = want.data.map((v, i) => v - w0[i]!);
    const dGot = g.map((v, i) => v - w0[i]!);
    const dScale = Math.max(maxAbs(dWant), 1e-12);
    const relUpdate = maxAbsDiff(dGot, dWant) / dScale;
    if (relUpdate > worstUpdate.rel) worstUpdate = { name, rel: relUpdate };
  }
  expect(worst.rel, `worst tensor ${worst.name}`).toBeLessThan(1e-4);
  expect(worstUpdate.rel, `worst update ${worstUpdate.name}`).toBeLessThan(2e-2);
  trainer.dispose();
  net.dispose();
});
