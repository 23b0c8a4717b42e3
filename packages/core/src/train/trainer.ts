import { STRATEGIES, strategyName, type Strategy } from '@ferry/common';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { disposeBnStats } from '../backends/fused.js';
import { assertDeviceHealthy } from '../backends/select.js';
import { tensorsInHostMemory } from '../backends/shared.js';
import { CheckpointError, InvalidArgumentError, NonFiniteLossError } from '../errors.js';
import type { BnBatchStats } from '../models/layers.js';
import { paramsOfStage } from '../models/model.js';
import { Rng } from '../util/rng.js';
import type { StateDict } from '../weights/host-tensor.js';
import { readWeightsFile, resolveWeights } from '../weights/load.js';
import {
  CHECKPOINT_FORMAT,
  momentumTensors,
  readCheckpoint,
  saveCheckpoint,
  saveWeights,
  type CheckpointMeta,
} from './checkpoint.js';
import { STREAM_DROPOUT, streamSeed, type Batch, type BatchSource } from './data.js';
import { batchNormStatNames } from './batchnorm.js';
import { broadcastFromRank0, ringAllReduceSum, type RingTransport } from './collective.js';
import { accuracyOf, addConfusion, argmaxRows, confusionMatrix, perClassAccuracy, stepLr } from './metrics.js';
import { firstTrainableStage, type Network } from './network.js';
import type { EpochMetrics, TrainProgress, TrainResult } from './result.js';
import { Sgd } from './sgd.js';

/** Hyper-parameters of one training run, with the study's defaults. */
export interface TrainConfig {
  readonly epochs: number;
  readonly lr: number;
  readonly momentum: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
  /** StepLR period in epochs (0 = constant learning rate). */
  readonly lrStepEpochs: number;
  readonly lrGamma: number;
  readonly strategy: Strategy;
  readonly seed: number;
}

export const DEFAULT_TRAIN_CONFIG: TrainConfig = {
  epochs: 15,
  lr: 0.001,
  momentum: 0.9,
  weightDecay: 0,
  nesterov: false,
  lrStepEpochs: 7,
  lrGamma: 0.1,
  strategy: { kind: 'finetune' },
  seed: 0,
};

export interface TrainerOptions {
  readonly network: Network;
  readonly config: TrainConfig;
  readonly train: BatchSource;
  readonly val: BatchSource;
  /** Where `last.safetensors` (every epoch) and `best.safetensors` go; resumes from `last` if present. */
  readonly checkpointDir?: string;
  readonly onProgress?: (p: TrainProgress) => void;
  readonly signal?: AbortSignal;
  /**
   * Stage the batches enter at (default 0: images). Cached backbone features of a frozen network
   * enter at the head stage, so the backbone is not recomputed every epoch.
   */
  readonly inputStage?: number;
  /** Process each batch in chunks of this many images, averaging gradients (0: whole batch). */
  readonly microBatch?: number;
  /**
   * Data-parallel training: this rank's `train`/`val` sources yield its shard; gradients are
   * averaged over the ring every step, BatchNorm statistics at every epoch end, validation
   * confusion matrices summed; rank 0 starts everyone from its weights and alone writes files.
   */
  readonly distributed?: { readonly transport: RingTransport; readonly deadlineMs: number };
}

/** What a training step reports: loss summed over its images, and how many it classified right. */
export interface StepOutcome {
  readonly lossSum: number;
  readonly correct: number;
}

/** A (micro-)batch's loss and logits, still on the device. */
interface PendingOutcome {
  readonly loss: tf.Scalar;
  readonly logits: tf.Tensor2D;
  readonly labels: Int32Array;
}

/**
 * A batch's mean loss and predicted classes, read back asynchronously (GPU backends have no
 * synchronous read); frees both tensors.
 */
async function readPredictions(loss: tf.Scalar, logits: tf.Tensor2D): Promise<{ loss: number; preds: Int32Array }> {
  try {
    const [l, values] = await Promise.all([loss.data(), logits.data()]);
    const [n, k] = logits.shape;
    return { loss: l[0]!, preds: argmaxRows(values, n, k) };
  } finally {
    loss.dispose();
    logits.dispose();
  }
}

/** Reads pending outcomes back and frees them. */
async function readOutcome(pending: readonly PendingOutcome[]): Promise<StepOutcome> {
  let lossSum = 0;
  let correct = 0;
  const read = await Promise.all(pending.map((p) => readPredictions(p.loss, p.logits)));
  for (let j = 0; j < pending.length; j++) {
    const { loss, preds } = read[j]!;
    const labels = pending[j]!.labels;
    lossSum += loss * labels.length;
    for (let i = 0; i < labels.length; i++) if (preds[i] === labels[i]) correct++;
  }
  // A GPU program that failed leaves wrong numbers behind, not an exception: stop here.
  assertDeviceHealthy();
  return { lossSum, correct };
}

/** Consecutive views of `flat`, one per size (the inverse of readFlat). */
function segmentsOf(flat: Float32Array, sizes: readonly number[]): Float32Array[] {
  let o = 0;
  return sizes.map((size) => flat.subarray(o, (o += size)));
}

/**
 * The tensors' values end to end in one host array with `extra` free slots after them; a number
 * stands for that many zeros. On a GPU the tensors are concatenated on the device and read back
 * once (one round trip instead of one per tensor).
 */
async function readFlat(items: readonly (tf.Tensor | number)[], extra = 0): Promise<Float32Array> {
  const sizeOf = (t: tf.Tensor | number): number => (typeof t === 'number' ? t : t.size);
  const total = items.reduce<number>((a, t) => a + sizeOf(t), 0);
  const flat = new Float32Array(total + extra);
  if (tensorsInHostMemory()) {
    let o = 0;
    for (const t of items) {
      if (typeof t !== 'number') flat.set((await t.data()) as Float32Array, o);
      o += sizeOf(t);
    }
    return flat;
  }
  const joined = tf.tidy(() =>
    tf.concat(items.map((t) => (typeof t === 'number' ? tf.zeros([t]) : tf.reshape(t, [-1])))),
  );
  try {
    flat.set((await joined.data()) as Float32Array, 0);
  } finally {
    joined.dispose();
  }
  return flat;
}

/**
 * Replaces the named variables by their mean over the ranks of a data-parallel group (BatchNorm
 * statistics, which each rank estimates on its own shard).
 */
export async function averageOverRing(
  network: Network,
  names: readonly string[],
  dist: { readonly transport: RingTransport; readonly deadlineMs: number },
  tag: string,
): Promise<void> {
  if (names.length === 0) return;
  const vars = names.map((n) => network.variables.get(n)!);
  const flat = await readFlat(vars);
  await ringAllReduceSum(dist.transport, flat, tag, dist.deadlineMs);
  segmentsOf(
    flat,
    vars.map((v) => v.size),
  ).forEach((part, i) => {
    const v = vars[i]!;
    tf.tidy(() =>
      v.assign(
        tf.tensor(
          part.map((x) => x / dist.transport.worldSize),
          v.shape,
        ),
      ),
    );
  });
}

/**
 * Puts the ranks' shards of per-image values back into val order: rank r evaluated images r, r + k,
 * r + 2k, ... (distributedShard without padding), so its j-th value belongs at r + j k. One sum over
 * the ring (values shifted by 1 so that 0 means "not mine"; float32 holds integers exactly to 2^24).
 */
async function gatherShards(
  d: { readonly transport: RingTransport; readonly deadlineMs: number },
  total: number,
  parts: readonly (readonly number[])[],
  tag: string,
): Promise<Int32Array[]> {
  const { rank, worldSize } = d.transport;
  const flat = new Float32Array(total * parts.length);
  parts.forEach((values, p) =>
    values.forEach((v, j) => {
      const at = rank + j * worldSize;
      if (at < total) flat[p * total + at] = v + 1;
    }),
  );
  await ringAllReduceSum(d.transport, flat, tag, d.deadlineMs);
  return parts.map((_, p) => Int32Array.from(flat.subarray(p * total, (p + 1) * total), (v) => v - 1));
}

/** Softmax cross-entropy, mean over the batch (torch.nn.CrossEntropyLoss). */
export function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D, numClasses: number): tf.Scalar {
  return tf.tidy(() => {
    const oneHot = tf.cast(tf.oneHot(labels, numClasses), 'float32');
    return tf.neg(tf.mean(tf.sum(tf.mul(oneHot, tf.logSoftmax(logits)), 1))) as tf.Scalar;
  });
}

function validate(config: TrainConfig): void {
  const bad = (name: string, why: string): never => {
    throw new InvalidArgumentError(`train config: ${name} ${why}`);
  };
  if (!Number.isInteger(config.epochs) || config.epochs < 1)
    bad('epochs', `must be a positive integer (got ${config.epochs})`);
  if (!(config.lr > 0) || !Number.isFinite(config.lr)) bad('lr', `must be a positive number (got ${config.lr})`);
  if (config.momentum < 0 || config.momentum >= 1) bad('momentum', `must be in [0, 1) (got ${config.momentum})`);
  if (config.weightDecay < 0) bad('weightDecay', 'must not be negative');
  if (config.lrStepEpochs < 0) bad('lrStepEpochs', 'must not be negative');
  if (config.nesterov && config.momentum === 0) bad('nesterov', 'needs a momentum above 0');
}

export function configHash(arch: string, numClasses: number, config: TrainConfig): string {
  // A strategy whose meaning changed (revision > 1) never resumes a checkpoint of the old meaning.
  const revision = STRATEGIES[config.strategy.kind].revision;
  const canon = JSON.stringify({
    arch,
    numClasses,
    ...config,
    strategy: strategyName(config.strategy),
    ...(revision > 1 ? { strategyRevision: revision } : {}),
  });
  return createHash('sha256').update(canon).digest('hex').slice(0, 16);
}

/**
 * One training run with the study's semantics: per epoch a pass over `train` (StepLR learning rate,
 * SGD with torch momentum), a pass over `val`, best-val weights kept, a checkpoint written.
 */
export class Trainer {
  private readonly first: number;
  private readonly inputStage: number;
  private readonly trainable: Map<string, tf.Variable>;
  private readonly byTfName: Map<string, string>;
  private readonly sgd: Sgd;
  /** The frozen stages run in training mode (the study's freeze): batch statistics, running ones updated. */
  private readonly frozenInTrainingMode: boolean;
  /** Every tensor training changes: what the best-val snapshot keeps. */
  private readonly changing: string[];

  constructor(private readonly options: TrainerOptions) {
    validate(options.config);
    const { network, train, val } = options;
    if (train.numClasses !== network.model.numClasses || val.numClasses !== network.model.numClasses) {
      throw new InvalidArgumentError(
        `the model has ${network.model.numClasses} classes but the data has ${train.numClasses} (train) / ${val.numClasses} (val)`,
      );
    }
    this.first = firstTrainableStage(network.model, options.config.strategy);
    this.inputStage = options.inputStage ?? 0;
    if (this.inputStage > this.first) {
      throw new InvalidArgumentError(
        `batches enter at stage ${network.model.stages[this.inputStage]?.name ?? this.inputStage}, after the first trained stage ${network.model.stages[this.first]?.name}`,
      );
    }
    this.trainable = network.trainableVariables(this.first);
    this.frozenInTrainingMode = STRATEGIES[options.config.strategy.kind].frozenBatchNorm === 'train';
    if (this.frozenInTrainingMode && this.inputStage > 0) {
      throw new InvalidArgumentError(
        `${strategyName(options.config.strategy)} runs the frozen stages' BatchNorm in training mode, so their features cannot be cached (batches must enter at stage 0)`,
      );
    }
    this.changing = [
      ...(this.frozenInTrainingMode ? batchNormStatNames(network, 0, this.first) : []),
      ...network.model.stages
        .slice(this.first)
        .flatMap((stage) => paramsOfStage(network.model, stage).map((p) => p.name)),
    ];
    this.byTfName = new Map([...this.trainable].map(([k, v]) => [v.name, k]));
    this.sgd = new Sgd(options.config);
  }

  /**
   * One SGD step on a batch; resolves to the summed loss and the number of correct predictions.
   * With `microBatch` set below the batch size, the batch is processed in chunks whose gradients
   * are averaged (weighted by chunk size) before the single update: the memory of a chunk, the
   * update of the batch. BatchNorm then normalises per chunk, as nn.DataParallel does per GPU in
   * the study.
   */
  async trainStep(batch: Batch, lr: number, rng?: Rng): Promise<StepOutcome> {
    return readOutcome(this.enqueueStep(batch, lr, rng));
  }

  /**
   * Queues one step's device work (forward, backward, update) and returns what is left to read
   * back. Nothing here waits for the device, so a GPU backend can run this step while the host
   * queues the next (the training loop reads each step's loss one step later).
   */
  private enqueueStep(batch: Batch, lr: number, rng?: Rng): PendingOutcome[] {
    const n = batch.labels.length;
    const micro = this.options.microBatch && this.options.microBatch < n ? this.options.microBatch : n;
    if (micro === n) {
      const r = this.forwardBackward(batch, rng);
      this.sgd.step(this.trainable, r.grads, lr);
      for (const g of r.grads.values()) g.dispose();
      return [r.pending];
    }
    const per = batch.x.length / n;
    const itemShape = batch.shape.slice(1);
    let accum: Map<string, tf.Tensor> | undefined;
    const pending: PendingOutcome[] = [];
    for (let s = 0; s < n; s += micro) {
      const m = Math.min(micro, n - s);
      const r = this.forwardBackward(
        {
          x: batch.x.subarray(s * per, (s + m) * per),
          shape: [m, ...itemShape],
          labels: batch.labels.subarray(s, s + m),
        },
        rng,
      );
      pending.push(r.pending);
      const next = new Map<string, tf.Tensor>();
      for (const [name, g] of r.grads) {
        const prev = accum?.get(name);
        next.set(
          name,
          tf.tidy(() => (prev ? tf.add(prev, tf.mul(g, m / n)) : tf.mul(g, m / n))),
        );
        g.dispose();
        prev?.dispose();
      }
      accum = next;
    }
    this.sgd.step(this.trainable, accum!, lr);
    for (const g of accum!.values()) g.dispose();
    return pending;
  }

  /** One data-parallel step: local gradients, averaged over the ring (with loss and accuracy), one update. */
  private async trainStepDistributed(
    batch: Batch,
    lr: number,
    step: string,
    rng?: Rng,
  ): Promise<{ lossSum: number; correct: number; n: number }> {
    const d = this.options.distributed!;
    const r = this.forwardBackward(batch, rng);
    const local = await readOutcome([r.pending]);
    const names = [...this.trainable.keys()];
    const sizes = names.map((n) => this.trainable.get(n)!.size);
    const total = sizes.reduce((a, b) => a + b, 0);
    const flat = await readFlat(
      names.map((n, i) => r.grads.get(n) ?? sizes[i]!),
      3,
    );
    for (const g of r.grads.values()) g.dispose();
    flat[total] = local.lossSum;
    flat[total + 1] = local.correct;
    flat[total + 2] = batch.labels.length;
    await ringAllReduceSum(d.transport, flat, `grad/${step}`, d.deadlineMs);
    const k = d.transport.worldSize;
    const grads = new Map<string, tf.Tensor>();
    segmentsOf(flat, sizes).forEach((part, i) => {
      for (let j = 0; j < part.length; j++) part[j]! /= k;
      grads.set(names[i]!, tf.tensor(part, this.trainable.get(names[i]!)!.shape));
    });
    this.sgd.step(this.trainable, grads, lr);
    for (const g of grads.values()) g.dispose();
    return { lossSum: flat[total]!, correct: flat[total + 1]!, n: flat[total + 2]! };
  }

  /** Averages BatchNorm running statistics over the ring (they drift apart on different shards). */
  private async syncBatchNorm(epoch: number): Promise<void> {
    const network = this.options.network;
    await averageOverRing(
      network,
      batchNormStatNames(network, 0, network.model.stages.length),
      this.options.distributed!,
      `bn/${epoch}`,
    );
  }

  /** Every rank starts from rank 0's weights and momentum (after any resume). */
  private async broadcastState(): Promise<void> {
    const d = this.options.distributed!;
    const vars = [...this.options.network.variables.values()];
    const flat = await readFlat(vars);
    await broadcastFromRank0(d.transport, flat, 'init/weights', d.deadlineMs);
    segmentsOf(
      flat,
      vars.map((v) => v.size),
    ).forEach((part, i) => {
      const v = vars[i]!;
      tf.tidy(() => v.assign(tf.tensor(part, v.shape)));
    });
  }

  /** Forward and backward on one (micro-)batch; updates BatchNorm running statistics. */
  private forwardBackward(batch: Batch, rng?: Rng): { pending: PendingOutcome; grads: Map<string, tf.Tensor> } {
    const { network } = this.options;
    const model = network.model;
    const bnStats: BnBatchStats[] = [];
    let logitsKept: tf.Tensor2D | undefined;
    const named = new Map<string, tf.Tensor>();
    const lossValue = tf.tidy(() => {
      const x = tf.tensor(batch.x, [...batch.shape]);
      const labels = tf.tensor1d(batch.labels, 'int32');
      // Frozen stages run outside the gradient tape: in training mode for the study's freeze (batch
      // statistics, running statistics updated below; torch's model.train() with requires_grad
      // False), otherwise in inference mode with their running statistics.
      const features =
        this.first > this.inputStage
          ? network.runStages(x, this.inputStage, this.first, {
              training: this.frozenInTrainingMode,
              bnStats,
              ...(rng && this.frozenInTrainingMode ? { rng } : {}),
            })
          : x;
      const f = (): tf.Scalar => {
        const logits = network.runStages(features, this.first, model.stages.length, {
          training: true,
          bnStats,
          ...(rng ? { rng } : {}),
        }) as tf.Tensor2D;
        logitsKept = tf.keep(logits);
        return crossEntropy(logits, labels, model.numClasses);
      };
      const { value, grads } = tf.variableGrads(f, [...this.trainable.values()]);
      for (const [tfName, g] of Object.entries(grads)) named.set(this.byTfName.get(tfName)!, tf.keep(g));
      return value;
    });
    network.updateBatchNormStats(bnStats);
    for (const s of bnStats) disposeBnStats(s.stats);
    return { pending: { loss: lossValue, logits: logitsKept!, labels: Int32Array.from(batch.labels) }, grads: named };
  }

  /**
   * Loss, confusion matrix and per-image predictions over a source, in inference mode. In a
   * data-parallel group every rank returns the whole val set's numbers.
   */
  async evaluate(
    source: BatchSource,
    opTag = 'eval',
  ): Promise<{ loss: number; confusion: number[][]; predictions: Int32Array; labels: Int32Array }> {
    const k = this.options.network.model.numClasses;
    const confusion = confusionMatrix([], [], k);
    const predictions: number[] = [];
    const labels: number[] = [];
    let lossSum = 0;
    let count = 0;
    for await (const batch of source.batches(0, this.options.config.seed)) {
      const n = batch.labels.length;
      const [lossT, logitsT] = tf.tidy(() => {
        const net = this.options.network;
        const logits = net.runStages(tf.tensor(batch.x, [...batch.shape]), this.inputStage, net.model.stages.length, {
          training: false,
        }) as tf.Tensor2D;
        return [crossEntropy(logits, tf.tensor1d(batch.labels, 'int32'), k), logits] as const;
      });
      const { loss, preds } = await readPredictions(lossT, logitsT);
      lossSum += loss * n;
      count += n;
      addConfusion(confusion, confusionMatrix(batch.labels, preds, k));
      for (let i = 0; i < n; i++) {
        predictions.push(preds[i]!);
        labels.push(batch.labels[i]!);
      }
    }
    assertDeviceHealthy();
    const d = this.options.distributed;
    if (d) {
      // Each rank evaluated its shard of the val set: sum the confusion matrices and losses.
      const flat = Float32Array.from([...confusion.flat(), lossSum, count]);
      await ringAllReduceSum(d.transport, flat, `val/${opTag}`, d.deadlineMs);
      confusion.forEach((row, i) => row.forEach((_, j) => (row[j] = flat[i * k + j]!)));
      lossSum = flat[k * k]!;
      count = flat[k * k + 1]!;
      const all = await gatherShards(d, Math.round(count), [predictions, labels], `valpred/${opTag}`);
      return { loss: count === 0 ? 0 : lossSum / count, confusion, predictions: all[0]!, labels: all[1]! };
    }
    return {
      loss: count === 0 ? 0 : lossSum / count,
      confusion,
      predictions: Int32Array.from(predictions),
      labels: Int32Array.from(labels),
    };
  }

  async run(): Promise<TrainResult> {
    const { network, config, checkpointDir, onProgress, signal } = this.options;
    const model = network.model;
    const hash = configHash(model.arch, model.numClasses, config);
    const history: EpochMetrics[] = [];
    let bestAcc = -1;
    let bestEpoch = -1;
    // Best-val weights: a device-side copy of what training can change (cheap), plus the file.
    let bestSnapshot: Map<string, tf.Tensor> | undefined;
    let bestPredictions: readonly number[] = [];
    let valLabels: readonly number[] = [];
    let bestFromFile: StateDict | undefined;
    let start = 0;
    const lastFile = checkpointDir ? path.join(checkpointDir, 'last.safetensors') : undefined;
    const bestFile = checkpointDir ? path.join(checkpointDir, 'best.safetensors') : undefined;

    if (lastFile && existsSync(lastFile)) {
      const ck = await readCheckpoint(lastFile);
      if (ck.meta.configHash !== hash) {
        throw new CheckpointError(
          `${lastFile} belongs to another configuration (${ck.meta.configHash}, this run is ${hash}); use another --out directory`,
        );
      }
      network.assign(resolveWeights(model, ck.model, lastFile).values);
      const mom = momentumTensors(model, ck.momentum);
      this.sgd.load(mom);
      for (const t of mom.values()) t.dispose();
      history.push(...ck.meta.history);
      start = ck.meta.epochsDone;
      bestAcc = ck.meta.bestValAccuracy;
      bestEpoch = ck.meta.bestEpoch;
      bestPredictions = ck.meta.bestPredictions ?? [];
      valLabels = ck.meta.valLabels ?? [];
      if (bestFile && existsSync(bestFile)) bestFromFile = (await readWeightsFile(bestFile)).tensors;
    }
    const resumedFrom = start;
    const dist = this.options.distributed;
    const writer = !dist || dist.transport.rank === 0;
    if (dist) await this.broadcastState();

    const wallStart = performance.now();
    let trainImages = 0;
    let trainMsTotal = 0;
    const stepsPerEpoch = Math.ceil(this.options.train.size / this.options.train.batchSize);
    for (let epoch = start; epoch < config.epochs; epoch++) {
      if (signal?.aborted) throw signal.reason ?? new Error('aborted');
      const lr = stepLr(config.lr, epoch, config.lrStepEpochs, config.lrGamma);
      const rng = Rng.fromSeed(streamSeed(config.seed, epoch, STREAM_DROPOUT));
      let lossSum = 0;
      let correct = 0;
      let seen = 0;
      let step = 0;
      let dataWaitMs = 0;
      const t0 = performance.now();
      // The step whose loss is still being read back (see enqueueStep).
      type InFlight = { outcome: Promise<StepOutcome & { n: number }>; step: number };
      let inFlight: InFlight | undefined;
      const account = async (f: InFlight): Promise<void> => {
        const r = await f.outcome;
        if (!Number.isFinite(r.lossSum)) throw new NonFiniteLossError(epoch, f.step, r.lossSum / r.n);
        lossSum += r.lossSum;
        correct += r.correct;
        seen += r.n;
        const elapsed = performance.now() - t0;
        const ips = (seen / elapsed) * 1000;
        const remainingImages = (config.epochs - epoch) * this.options.train.size - seen;
        onProgress?.({
          type: 'step',
          epoch,
          step: f.step + 1,
          stepsPerEpoch,
          loss: r.lossSum / r.n,
          imagesPerSec: ips,
          etaMs: (remainingImages / ips) * 1000,
        });
      };
      const it = this.options.train.batches(epoch, config.seed)[Symbol.asyncIterator]();
      for (;;) {
        const w0 = performance.now();
        const next = await it.next();
        dataWaitMs += performance.now() - w0;
        if (next.done) break;
        if (signal?.aborted) {
          await it.return?.();
          throw signal.reason ?? new Error('aborted');
        }
        let outcome: Promise<StepOutcome & { n: number }>;
        if (dist) {
          outcome = Promise.resolve(await this.trainStepDistributed(next.value, lr, `${epoch}/${step}`, rng));
        } else {
          const n = next.value.labels.length;
          outcome = readOutcome(this.enqueueStep(next.value, lr, rng)).then((r) => ({ ...r, n }));
          // Read back after the next step is queued; never an unhandled rejection meanwhile.
          outcome.catch(() => undefined);
        }
        if (inFlight) await account(inFlight);
        inFlight = { outcome, step };
        step++;
      }
      if (inFlight) await account(inFlight);
      const trainMs = performance.now() - t0;
      if (dist) await this.syncBatchNorm(epoch);
      const v0 = performance.now();
      const val = await this.evaluate(this.options.val, `epoch${epoch}`);
      const valMs = performance.now() - v0;
      const valAccuracy = accuracyOf(val.confusion);
      const metrics: EpochMetrics = {
        epoch,
        lr,
        trainLoss: seen === 0 ? 0 : lossSum / seen,
        trainAccuracy: seen === 0 ? 0 : correct / seen,
        valLoss: val.loss,
        valAccuracy,
        confusion: val.confusion,
        perClassAccuracy: perClassAccuracy(val.confusion),
        trainMs,
        valMs,
        dataWaitMs,
        imagesPerSec: (seen / trainMs) * 1000,
      };
      history.push(metrics);
      trainImages += seen;
      trainMsTotal += trainMs;
      // torch's script keeps the first epoch reaching the best accuracy (strictly greater).
      const improved = valAccuracy > bestAcc;
      if (improved) {
        bestAcc = valAccuracy;
        bestEpoch = epoch;
        bestPredictions = [...val.predictions];
        valLabels = [...val.labels];
        for (const t of bestSnapshot?.values() ?? []) t.dispose();
        bestSnapshot = network.snapshot(this.changing);
        bestFromFile = undefined;
        if (bestFile && writer)
          await saveWeights(bestFile, await network.exportState(), {
            ferry_best_epoch: String(epoch),
            ferry_arch: model.arch,
          });
      }
      onProgress?.({ type: 'epoch', metrics, best: improved });
      if (lastFile && writer) {
        const meta: CheckpointMeta = {
          format: CHECKPOINT_FORMAT,
          arch: model.arch,
          numClasses: model.numClasses,
          strategy: strategyName(config.strategy),
          epochsDone: epoch + 1,
          seed: config.seed,
          history,
          bestValAccuracy: bestAcc,
          bestEpoch,
          bestPredictions,
          valLabels,
          configHash: hash,
        };
        await saveCheckpoint(lastFile, network, this.sgd, meta);
        onProgress?.({ type: 'checkpoint', epoch, file: lastFile });
      }
    }
    // As the study does: the model ends with its best-val weights.
    if (bestSnapshot) {
      network.restore(bestSnapshot);
      for (const t of bestSnapshot.values()) t.dispose();
    } else if (bestFromFile) network.assign(resolveWeights(model, bestFromFile, 'best weights').values);
    const best = history.find((h) => h.epoch === bestEpoch);
    return {
      epochs: history,
      bestValAccuracy: bestAcc,
      bestEpoch,
      bestConfusion: best?.confusion ?? [],
      bestPerClassAccuracy: best?.perClassAccuracy ?? [],
      bestPredictions,
      valLabels,
      wallMs: performance.now() - wallStart,
      imagesPerSec: trainMsTotal > 0 ? (trainImages / trainMsTotal) * 1000 : 0,
      resumedFromEpoch: resumedFrom,
    };
  }

  dispose(): void {
    this.sgd.dispose();
  }
}
