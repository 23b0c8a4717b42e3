import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, test } from 'vitest';
import {
  CheckpointError,
  DEFAULT_TRAIN_CONFIG,
  Network,
  NonFiniteLossError,
  Trainer,
  buildModel,
  readCheckpoint,
  selectBackend,
  type Batch,
  type BatchSource,
  type StateDict,
  type TrainConfig,
  type TrainProgress,
} from '@ferry/core';
import { syntheticSources } from '../../../test/helpers/synthetic.js';
import { reversedWithinBatches, roundingTolerance } from '../../../test/helpers/rounding-twin.js';

const SIZE = 32;
const data = () => syntheticSources({ train: 64, val: 32, size: SIZE, classes: 4, batchSize: 16, seed: 7 });
const config = (over: Partial<TrainConfig> = {}): TrainConfig => ({
  ...DEFAULT_TRAIN_CONFIG,
  epochs: 4,
  lr: 0.05,
  lrStepEpochs: 3,
  seed: 11,
  ...over,
});
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-train-'));

function same(a: StateDict, b: StateDict, name: string): boolean {
  const x = a.get(name)!.data;
  const y = b.get(name)!.data;
  return x.every((v, i) => v === y[i]);
}

beforeAll(async () => {
  await selectBackend('wasm');
});

describe('trainer', () => {
  test('finetuning a tiny ResNet learns the synthetic task well above chance', async () => {
    const { train, val } = data();
    const net = Network.create(buildModel('resnet_tiny', 4), { seed: 1 });
    const trainer = new Trainer({ network: net, config: config({ epochs: 6 }), train, val });
    const r = await trainer.run();
    expect(r.epochs).toHaveLength(6);
    expect(r.epochs[5]!.trainLoss).toBeLessThan(r.epochs[0]!.trainLoss);
    expect(r.bestValAccuracy).toBeGreaterThan(0.8);
    expect(r.epochs[r.bestEpoch]!.valAccuracy).toBe(r.bestValAccuracy);
    // StepLR: 0.05 for epochs 0-2, 0.005 from epoch 3.
    expect(r.epochs.map((e) => e.lr)).toEqual(
      [0.05, 0.05, 0.05, 0.005, 0.005, 0.005].map((v, i) => (i < 3 ? v : 0.05 * 0.1)),
    );
    // The confusion matrix of the best epoch accounts for every val image.
    expect(r.confusion.flat().reduce((a, b) => a + b, 0)).toBe(32);
    // The network ends with its best weights, as the study keeps them.
    const again = await trainer.evaluate(val);
    const acc = again.confusion.reduce((a, row, i) => a + row[i]!, 0) / 32;
    expect(acc).toBe(r.bestValAccuracy);
    trainer.dispose();
    net.dispose();
  });

  test('the number of live tensors is constant across training steps', async () => {
    const net = Network.create(buildModel('mobilenet_v2_tiny', 4), { seed: 1 });
    const { train, val } = data();
    const trainer = new Trainer({ network: net, config: config(), train, val });
    const x = new Float32Array(4 * SIZE * SIZE * 3).map((_, i) => Math.sin(i));
    const batch: Batch = { x, shape: [4, SIZE, SIZE, 3], labels: Int32Array.from([0, 1, 2, 3]) };
    await trainer.trainStep(batch, 0.01); // the first step creates the momentum buffers
    const after1 = tf.memory().numTensors;
    for (let i = 0; i < 4; i++) await trainer.trainStep(batch, 0.01);
    expect(tf.memory().numTensors).toBe(after1);
    trainer.dispose();
    net.dispose();
  });

  const isRunningStat = (n: string): boolean => n.endsWith('.running_mean') || n.endsWith('.running_var');

  test("freeze (the study's) trains only the head, keeps every backbone weight, and moves the backbone's BatchNorm statistics to the data", async () => {
    const model = buildModel('resnet_tiny', 4);
    const net = Network.create(model, { seed: 2 });
    const before = await net.exportState();
    const { train, val } = data();
    const trainer = new Trainer({
      network: net,
      config: config({ epochs: 1, strategy: { kind: 'freeze' } }),
      train,
      val,
    });
    await trainer.run();
    const after = await net.exportState();
    for (const p of model.params) {
      const changes = p.name.startsWith('fc.') || isRunningStat(p.name);
      expect(same(before, after, p.name), p.name).toBe(!changes);
    }
    trainer.dispose();
    net.dispose();
  });

  test('probe trains only the head and leaves every backbone tensor, BatchNorm statistics included, untouched', async () => {
    const model = buildModel('resnet_tiny', 4);
    const net = Network.create(model, { seed: 2 });
    const before = await net.exportState();
    const { train, val } = data();
    const trainer = new Trainer({
      network: net,
      config: config({ epochs: 1, strategy: { kind: 'probe' } }),
      train,
      val,
    });
    await trainer.run();
    const after = await net.exportState();
    for (const p of model.params) expect(same(before, after, p.name), p.name).toBe(!p.name.startsWith('fc.'));
    trainer.dispose();
    net.dispose();
  });

  test('freezeUntil:layer3 trains layer3 onwards; conv1, layer1 and layer2 keep their weights, their BatchNorm statistics follow the data', async () => {
    const model = buildModel('resnet_tiny', 4);
    const net = Network.create(model, { seed: 3 });
    const before = await net.exportState();
    const { train, val } = data();
    const trainer = new Trainer({
      network: net,
      config: config({ epochs: 1, strategy: { kind: 'freezeUntil', stage: 'layer3' } }),
      train,
      val,
    });
    await trainer.run();
    const after = await net.exportState();
    const frozen = (n: string): boolean => /^(conv1|bn1|layer1|layer2)\./.test(n) && !isRunningStat(n);
    for (const p of model.params) expect(same(before, after, p.name), p.name).toBe(frozen(p.name));
    trainer.dispose();
    net.dispose();
  });

  test('resuming from the epoch checkpoint reproduces the uninterrupted run exactly', async () => {
    const full = { dir: tmp() };
    const cut = { dir: tmp() };
    const run = async (dir: string, signal?: AbortSignal, onProgress?: (p: TrainProgress) => void) => {
      const { train, val } = data();
      const net = Network.create(buildModel('mobilenet_v2_tiny', 4), { seed: 5 });
      const trainer = new Trainer({
        network: net,
        config: config({ epochs: 4 }),
        train,
        val,
        checkpointDir: dir,
        ...(signal ? { signal } : {}),
        ...(onProgress ? { onProgress } : {}),
      });
      try {
        return await trainer.run();
      } finally {
        trainer.dispose();
        net.dispose();
      }
    };
    const uninterrupted = await run(full.dir);
    const abort = new AbortController();
    await expect(
      run(cut.dir, abort.signal, (p) => {
        if (p.type === 'checkpoint' && p.epoch === 1) abort.abort(new Error('stop after epoch 2'));
      }),
    ).rejects.toThrow('stop after epoch 2');
    expect((await readCheckpoint(path.join(cut.dir, 'last.safetensors'))).meta.epochsDone).toBe(2);
    const resumed = await run(cut.dir);
    expect(resumed.resumedFromEpoch).toBe(2);
    const pick = (r: typeof resumed) => r.epochs.map((e) => [e.trainLoss, e.trainAccuracy, e.valLoss, e.valAccuracy]);
    expect(pick(resumed)).toEqual(pick(uninterrupted));
    expect(resumed.bestEpoch).toBe(uninterrupted.bestEpoch);
    // The best epoch's per-image predictions survive the resume (they come from the checkpoint
    // when the best epoch was before the cut).
    expect(resumed.valPredictions).toEqual(uninterrupted.valPredictions);
    expect(resumed.valLabels).toEqual(uninterrupted.valLabels);
  });

  test("the best epoch's per-image predictions agree with its confusion matrix and accuracy", async () => {
    const { train, val } = data();
    const net = Network.create(buildModel('resnet_tiny', 4), { seed: 4 });
    const trainer = new Trainer({ network: net, config: config({ epochs: 3 }), train, val });
    const r = await trainer.run();
    expect(r.valPredictions).toHaveLength(32);
    expect(r.valLabels).toHaveLength(32);
    const confusion = Array.from({ length: 4 }, () => new Array<number>(4).fill(0));
    r.valLabels.forEach((label, i) => confusion[label]![r.valPredictions[i]!]!++);
    expect(confusion).toEqual(r.confusion);
    const correct = r.valLabels.filter((label, i) => r.valPredictions[i] === label).length;
    expect(correct / 32).toBe(r.bestValAccuracy);
    // Not all one class: the comparison says something.
    expect(new Set(r.valPredictions).size).toBeGreaterThan(1);
    trainer.dispose();
    net.dispose();
  });

  test('a checkpoint from another configuration is refused', async () => {
    const dir = tmp();
    const { train, val } = data();
    const net = Network.create(buildModel('resnet_tiny', 4), { seed: 1 });
    await new Trainer({ network: net, config: config({ epochs: 1 }), train, val, checkpointDir: dir }).run();
    const other = new Trainer({
      network: net,
      config: config({ epochs: 1, lr: 0.123 }),
      train,
      val,
      checkpointDir: dir,
    });
    await expect(other.run()).rejects.toBeInstanceOf(CheckpointError);
    net.dispose();
  });

  test('a non-finite loss stops the run with an error naming the epoch and step', async () => {
    // On cpu NaN propagates through ReLU (XNNPACK's wasm ReLU maps NaN to 0 and would hide it).
    await selectBackend('cpu');
    const { train, val } = data();
    const poisoned: BatchSource = {
      size: train.size,
      batchSize: train.batchSize,
      numClasses: train.numClasses,
      classNames: train.classNames,
      async *batches(epoch, seed) {
        let step = 0;
        for await (const b of train.batches(epoch, seed)) {
          if (epoch === 1 && step === 2) b.x.fill(Number.NaN);
          yield b;
          step++;
        }
      },
    };
    const net = Network.create(buildModel('resnet_tiny', 4), { seed: 1 });
    const err = await new Trainer({ network: net, config: config({ epochs: 3 }), train: poisoned, val })
      .run()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteLossError);
    expect((err as NonFiniteLossError).epoch).toBe(1);
    expect((err as NonFiniteLossError).step).toBe(2);
    expect((err as Error).message).toMatch(/epoch 1, step 2/);
    net.dispose();
    await selectBackend('wasm');
  });

  test("micro-batches average to the full-batch gradient (BatchNorm frozen in inference mode): the same steps within float32's own error", async () => {
    const model = buildModel('resnet_tiny', 4);
    const { train } = data();
    const batch = (await train.batches(0, 1)[Symbol.asyncIterator]().next()).value as Batch;
    // The rounding twin (test/helpers/rounding-twin.ts): the full batch with its images reversed,
    // the same mathematics summed in another order; its distance from the full batch is float32's
    // own error on these two steps, and micro-batches (the same sums, split and re-added) must land
    // within roundingTolerance of it.
    const reversed = (await reversedWithinBatches(train).batches(0, 1)[Symbol.asyncIterator]().next()).value as Batch;
    const runs: { state: StateDict; loss: number; correct: number }[] = [];
    for (const [microBatch, b] of [
      [0, batch],
      [5, batch],
      [0, reversed],
    ] as const) {
      const net = Network.create(model, { seed: 9 });
      const t = new Trainer({
        network: net,
        config: config({ strategy: { kind: 'probe' } }),
        train,
        val: train,
        microBatch,
      });
      const r1 = await t.trainStep(b, 0.1);
      const r2 = await t.trainStep(b, 0.1);
      runs.push({ state: await net.exportState(), loss: r1.lossSum + r2.lossSum, correct: r1.correct });
      t.dispose();
      net.dispose();
    }
    const [full, micro, twin] = runs as [(typeof runs)[0], (typeof runs)[0], (typeof runs)[0]];
    const before = Network.create(model, { seed: 9 });
    const w0 = (await before.exportState()).get('fc.weight')!.data;
    before.dispose();
    /** The largest difference in fc.weight, relative to how far the two steps moved it. */
    const stepDiff = (a: StateDict, b: StateDict): number => {
      const [x, y] = [a.get('fc.weight')!.data, b.get('fc.weight')!.data];
      let [diff, step] = [0, 0];
      x.forEach((v, i) => {
        diff = Math.max(diff, Math.abs(v - y[i]!));
        step = Math.max(step, Math.abs(v - w0[i]!));
      });
      expect(step).toBeGreaterThan(1e-3);
      return diff / step;
    };
    const lossDiff = (a: (typeof runs)[0]): number => Math.abs(a.loss - full.loss) / Math.abs(full.loss);
    console.log(
      JSON.stringify({
        test: 'micro-batch',
        twin: [stepDiff(full.state, twin.state), lossDiff(twin)],
        micro: [stepDiff(full.state, micro.state), lossDiff(micro)],
      }),
    );
    expect(micro.correct).toBe(full.correct);
    expect(lossDiff(micro)).toBeLessThan(roundingTolerance(lossDiff(twin)));
    expect(stepDiff(full.state, micro.state)).toBeLessThan(roundingTolerance(stepDiff(full.state, twin.state)));
  });

  test('bad hyper-parameters and mismatched class counts are refused before training', () => {
    const { train, val } = data();
    const net = Network.create(buildModel('resnet_tiny', 3), { seed: 1 });
    expect(() => new Trainer({ network: net, config: config(), train, val })).toThrow(/3 classes but the data has 4/);
    const net4 = Network.create(buildModel('resnet_tiny', 4), { seed: 1 });
    expect(() => new Trainer({ network: net4, config: config({ lr: -1 }), train, val })).toThrow(
      /train config: lr out of range \(got -1\); allowed: > 0/,
    );
    expect(
      () =>
        new Trainer({
          network: net4,
          config: config({ strategy: { kind: 'freezeUntil', stage: 'layer9' } }),
          train,
          val,
        }),
    ).toThrow(/no stage "layer9"/);
    net.dispose();
    net4.dispose();
  });
});
