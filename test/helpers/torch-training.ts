/**
 * torch_reference.py's training case, run by ferry: resnet18 (10 classes) from the fixture's
 * initial weights, two SGD steps (lr 0.01, momentum 0.9, weight decay 1e-4) on the fixture's batch
 * of 4, on whatever backend is current; and how far that lands from torch's float64 steps, in units
 * of torch float32's own error (parity.test.ts on wasm, webgpu.test.ts on WebGPU).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  ArrayBatchSource,
  DEFAULT_TRAIN_CONFIG,
  Network,
  Trainer,
  buildModel,
  nchwToNhwc,
  parseStrategy,
  readNpy,
  readWeightsFile,
  resolveWeights,
  type StateDict,
} from '@ferry/core';
import { TOLERANCE_FACTOR, readState64, torchRefDir, worstRatio } from './torch-ref.js';

const ref = (f: string): string => path.join(torchRefDir(), f);
const npy = (f: string) => readNpy(readFileSync(ref(f)), f);

/** The fixture's network: resnet18 with 10 classes, from its initial weights. */
export async function fixtureNetwork(): Promise<{ net: Network; init: StateDict }> {
  const model = buildModel('resnet18', 10);
  const init = (await readWeightsFile(ref('train_resnet18_init.pth'))).tensors;
  return { net: Network.create(model, { seed: 0, weights: resolveWeights(model, init, 'init') }), init };
}

/** An NCHW fixture array as NHWC. */
export function fixtureInput(file: string): ReturnType<typeof nchwToNhwc> {
  const a = npy(file);
  return nchwToNhwc(a.data, a.shape);
}

/** ferry's two steps of `protocol` on the fixture: the state after them, the initial one, each step's mean loss. */
export async function twoFixtureSteps(
  protocol: 'finetune' | 'freeze',
): Promise<{ state: StateDict; init: StateDict; losses: number[] }> {
  const { net, init } = await fixtureNetwork();
  const nhwc = fixtureInput('train_input.npy');
  const labels = Int32Array.from(npy('train_labels.npy').data);
  const source = new ArrayBatchSource(nhwc.data, labels, [nhwc.shape[1], nhwc.shape[2], 3], 10, {
    batchSize: 4,
    shuffle: false,
  });
  const trainer = new Trainer({
    network: net,
    config: {
      ...DEFAULT_TRAIN_CONFIG,
      epochs: 1,
      lr: 0.01,
      momentum: 0.9,
      weightDecay: 1e-4,
      strategy: parseStrategy(protocol),
    },
    train: source,
    val: source,
  });
  const losses: number[] = [];
  for (let i = 0; i < 2; i++)
    losses.push((await trainer.trainStep({ x: nhwc.data, shape: nhwc.shape, labels }, 0.01)).lossSum / 4);
  const state = await net.exportState();
  trainer.dispose();
  net.dispose();
  return { state, init, losses };
}

/**
 * The steps against torch's: the worst tensor's ratio (worstRatio) over every state tensor but
 * num_batches_tracked, and each loss's error with the tolerance it must stay under: TOLERANCE_FACTOR
 * times torch float32's own error on it (a loss near 2.3 holds float32 to about 2.4e-7 absolute:
 * the floor when torch is exact).
 */
export function versusTorchSteps(
  protocol: 'finetune' | 'freeze',
  run: { state: StateDict; init: StateDict; losses: readonly number[] },
): {
  names: string[];
  worst: ReturnType<typeof worstRatio>;
  losses: { got: number; want: number; error: number; tolerance: number }[];
} {
  const losses64 = JSON.parse(readFileSync(ref(`${protocol}_losses_f64.json`), 'utf8')) as number[];
  const losses32 = JSON.parse(readFileSync(ref(`${protocol}_losses_f32.json`), 'utf8')) as number[];
  const want64 = readState64(ref(`${protocol}_after_f64`));
  const want32 = readState64(ref(`${protocol}_after_f32`));
  const names = [...want64.keys()].filter((n) => !n.endsWith('num_batches_tracked'));
  return {
    names,
    worst: worstRatio(run.state, want64, want32, run.init, names),
    losses: run.losses.map((got, i) => ({
      got,
      want: losses64[i]!,
      error: Math.abs(got - losses64[i]!),
      tolerance: TOLERANCE_FACTOR * Math.max(Math.abs(losses32[i]! - losses64[i]!), 2.4e-7),
    })),
  };
}
