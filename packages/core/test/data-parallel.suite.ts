import type * as tf from '@tensorflow/tfjs-core';
import { beforeAll, expect, test } from 'vitest';
import {
  ArrayBatchSource,
  DEFAULT_TRAIN_CONFIG,
  Network,
  SpecBuilder,
  Trainer,
  buildModel,
  globalAvgPool,
  memoryRing,
  relu,
  selectBackend,
  type BatchSource,
  type ModelDef,
  type StateDict,
  type TrainConfig,
} from '@ferry/core';
import { relErr } from '../../../test/helpers/compare.js';
import { syntheticImages } from '../../../test/helpers/synthetic.js';
import { reversedWithinBatches, roundingTolerance } from '../../../test/helpers/rounding-twin.js';

/** A small CNN without BatchNorm: conv-relu-conv-relu-pool-fc. */
function noBnModel(classes: number): ModelDef {
  const b = new SpecBuilder();
  const c1 = b.conv('conv1', 3, 8, 3, 2, 1);
  const c2 = b.conv('conv2', 8, 16, 3, 1, 1);
  const fc = b.linear('fc', 16, classes, 'torch-default');
  return {
    arch: 'nobn',
    numClasses: classes,
    params: b.specs,
    stages: [
      {
        name: 'features',
        prefixes: ['conv1', 'conv2'],
        apply: (ctx, x) => relu(c2(ctx, relu(c1(ctx, x as tf.Tensor4D)))),
      },
      { name: 'avgpool', prefixes: [], apply: (_ctx, x) => globalAvgPool(x as tf.Tensor4D) },
      { name: 'fc', prefixes: ['fc'], apply: (ctx, x) => fc(ctx, x as tf.Tensor2D) },
    ],
    headStage: 'fc',
    inputSize: 16,
  };
}

const SIZE = 16;
const CLASSES = 4;
const { images, labels } = syntheticImages({ n: 32, size: SIZE, classes: CLASSES, seed: 3 });
const val = syntheticImages({ n: 12, size: SIZE, classes: CLASSES, seed: 4 });
const config: TrainConfig = { ...DEFAULT_TRAIN_CONFIG, epochs: 2, lr: 0.05, lrStepEpochs: 0, seed: 7 };

async function single(
  model: ModelDef,
  batch: number,
  cfg: TrainConfig = config,
  microBatch = 0,
  data: { images: Float32Array; labels: Int32Array; shuffle: boolean } = { images, labels, shuffle: true },
  twinGroup?: number,
): Promise<{ state: StateDict; valAcc: number[]; predictions: readonly number[]; labels: readonly number[] }> {
  const net = Network.create(model, { seed: 1 });
  const t = new Trainer({
    network: net,
    config: cfg,
    microBatch,
    train: twin(
      new ArrayBatchSource(data.images, data.labels, [SIZE, SIZE, 3], CLASSES, {
        batchSize: batch,
        shuffle: data.shuffle,
      }),
      twinGroup,
    ),
    val: new ArrayBatchSource(val.images, val.labels, [SIZE, SIZE, 3], CLASSES, { batchSize: 5, shuffle: false }),
  });
  const r = await t.run();
  const state = await net.exportState();
  t.dispose();
  net.dispose();
  return { state, valAcc: r.epochs.map((e) => e.valAccuracy), predictions: r.valPredictions, labels: r.valLabels };
}

async function parallel(
  model: ModelDef,
  k: number,
  globalBatch: number,
  cfg: TrainConfig = config,
  shuffle = true,
): Promise<{ state: StateDict; valAcc: number[]; predictions: readonly number[]; labels: readonly number[] }[]> {
  const ring = memoryRing(k);
  return Promise.all(
    ring.map(async (transport) => {
      // Different initial weights on purpose: rank 0's are broadcast.
      const net = Network.create(model, { seed: 1 + transport.rank * 100 });
      const shard = (pad: boolean) => ({ rank: transport.rank, worldSize: k, pad });
      const t = new Trainer({
        network: net,
        config: cfg,
        train: new ArrayBatchSource(images, labels, [SIZE, SIZE, 3], CLASSES, {
          batchSize: globalBatch / k,
          shuffle,
          shard: shard(true),
        }),
        val: new ArrayBatchSource(val.images, val.labels, [SIZE, SIZE, 3], CLASSES, {
          batchSize: 5,
          shuffle: false,
          shard: shard(false),
        }),
        distributed: { transport, deadlineMs: 30_000 },
      });
      const r = await t.run();
      const state = await net.exportState();
      t.dispose();
      net.dispose();
      return { state, valAcc: r.epochs.map((e) => e.valAccuracy), predictions: r.valPredictions, labels: r.valLabels };
    }),
  );
}

/** The rounding twin (test/helpers/rounding-twin.ts) when `group` is set: each group of `group` images reversed. */
const twin = (source: ArrayBatchSource, group: number | undefined): BatchSource =>
  group === undefined ? source : reversedWithinBatches(source, group);

function maxRelDiff(a: StateDict, b: StateDict): { name: string; rel: number } {
  let worst = { name: '', rel: 0 };
  for (const [name, t] of a) {
    const rel = relErr(b.get(name)!.data, t.data);
    if (rel > worst.rel) worst = { name, rel };
  }
  return worst;
}

/**
 * Data-parallel equivalence on `backend` (data-parallel.test.ts: wasm; torch-data-parallel.test.ts: torch; webgpu-data-parallel.test.ts:
 * webgpu, where gradients and weights cross the ring through one device read each).
 */
export function dataParallelSuite(backend: 'wasm' | 'webgpu' | 'torch'): void {
  beforeAll(async () => {
    await selectBackend(backend);
  }, 120_000);

  // Tolerances: the rounding twin (1 rank, each batch's images reversed) measures float32's own
  // error on this training; 2 or 4 ranks sum the same gradients in another order, so they must land
  // within roundingTolerance of it. A gradient averaged over the wrong count, a shard read twice or
  // an image dropped changes the update itself, orders of magnitude more.
  test("2 ranks x batch 4 give the weights of 1 rank x batch 8 within float32's own error (no BatchNorm); all ranks identical", async () => {
    const one = await single(noBnModel(CLASSES), 8);
    const rounding = maxRelDiff(one.state, (await single(noBnModel(CLASSES), 8, config, 0, undefined, 8)).state);
    const [r0, r1] = await parallel(noBnModel(CLASSES), 2, 8);
    const d = maxRelDiff(one.state, r0!.state);
    console.log(JSON.stringify({ test: 'dp-2-ranks', backend, twin: rounding, ranks: d }));
    expect(d.rel, `${d.name}; the twin's ${rounding.rel}`).toBeLessThan(roundingTolerance(rounding.rel));
    expect(maxRelDiff(r0!.state, r1!.state).rel).toBe(0);
    // Validation is sharded and summed: the same accuracy as evaluating everything on one rank.
    expect(r0!.valAcc).toEqual(one.valAcc);
    expect(r1!.valAcc).toEqual(r0!.valAcc);
    // Each rank's shard of per-image predictions is gathered back into val order on every rank.
    expect(r0!.labels).toEqual(one.labels);
    expect(r0!.predictions).toEqual(one.predictions);
    expect(r1!.predictions).toEqual(r0!.predictions);
  });

  test('4 ranks x batch 2 match 1 rank x batch 8 as well', async () => {
    const one = await single(noBnModel(CLASSES), 8);
    const rounding = maxRelDiff(one.state, (await single(noBnModel(CLASSES), 8, config, 0, undefined, 8)).state);
    const ranks = await parallel(noBnModel(CLASSES), 4, 8);
    const d = maxRelDiff(one.state, ranks[0]!.state);
    expect(d.rel, `${d.name}; the twin's ${rounding.rel}`).toBeLessThan(roundingTolerance(rounding.rel));
    expect(maxRelDiff(ranks[0]!.state, ranks[3]!.state).rel).toBe(0);
  });

  test("with BatchNorm: 2 ranks equal 1 rank whose micro-batches are the ranks' shards (per-shard statistics, as nn.DataParallel), within float32's own error of the update", async () => {
    const model = buildModel('resnet_tiny', CLASSES);
    const cfg: TrainConfig = { ...config, epochs: 2, lr: 0.01 };
    // Unshuffled, rank r's shard is images r, r+2, ...; reorder so that one rank's micro-batches are
    // exactly those shards: evens first, then odds.
    const per = SIZE * SIZE * 3;
    const order = [...Array(32).keys()]
      .filter((i) => i % 2 === 0)
      .concat([...Array(32).keys()].filter((i) => i % 2 === 1));
    const reordered = { images: new Float32Array(images.length), labels: new Int32Array(32), shuffle: false };
    order.forEach((src, i) => {
      reordered.images.set(images.subarray(src * per, (src + 1) * per), i * per);
      reordered.labels[i] = labels[src]!;
    });
    const chunked = await single(model, 32, cfg, 16, reordered);
    // The twin reverses each micro-batch of 16 (never moving an image to the other micro-batch,
    // whose BatchNorm statistics it would change).
    const chunkedTwin = await single(model, 32, cfg, 16, reordered, 16);
    const full = await single(model, 32, cfg, 0, reordered);
    const [r0, r1] = await parallel(buildModel('resnet_tiny', CLASSES), 2, 32, cfg, false);
    const vsChunked = await updateRelDiff(model, chunked.state, r0!.state);
    const vsFull = await updateRelDiff(model, full.state, r0!.state);
    const rounding = await updateRelDiff(model, chunked.state, chunkedTwin.state);
    console.log(
      JSON.stringify({
        test: 'dp-bn-tolerance',
        backend,
        twin: rounding,
        vsPerShardBatchNorm: vsChunked,
        vsFullBatchBatchNorm: vsFull,
      }),
    );
    expect(vsChunked, `the twin's ${rounding}`).toBeLessThan(roundingTolerance(rounding));
    // Per-shard statistics are a different computation from full-batch ones: far outside rounding.
    expect(vsFull).toBeGreaterThan(roundingTolerance(rounding));
    expect(maxRelDiff(r0!.state, r1!.state).rel).toBe(0);
  });
}

/** Largest difference between two runs' learnable tensors, relative to how far training moved them. */
async function updateRelDiff(model: ModelDef, a: StateDict, b: StateDict): Promise<number> {
  const n = Network.create(model, { seed: 1 });
  const init = await n.exportState();
  n.dispose();
  let diff = 0;
  let moved = 0;
  for (const spec of model.params.filter((p) => p.learnable)) {
    const x = a.get(spec.name)!.data;
    const y = b.get(spec.name)!.data;
    const z = init.get(spec.name)!.data;
    x.forEach((v, i) => {
      diff = Math.max(diff, Math.abs(v - y[i]!));
      moved = Math.max(moved, Math.abs(v - z[i]!));
    });
  }
  return diff / moved;
}
