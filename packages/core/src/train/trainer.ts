import {
  STRATEGIES,
  TRAINING_DEFAULTS,
  type TrainingHyperParameters,
  hyperParameterProblem,
  hyperParameterRange,
  strategyName,
  type Strategy,
} from '@ferry/common';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { disposeBnStats, softmaxCrossEntropy } from '../backends/fused.js';
import { assertDeviceHealthy } from '../backends/device-health.js';
import { installLeanGradients } from '../backends/lean-gradients.js';
import { CheckpointError, InvalidArgumentError, NonFiniteLossError } from '../errors.js';
import type { BnBatchStats } from '../models/layers.js';
import { paramsOfStage } from '../models/model.js';
import { Rng } from '../util/rng.js';
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
import { BestWeights } from './best-weights.js';
import {
  gradientSync,
  type CountedOutcome,
  type EvalSums,
  type GradientSync,
  type LocalStep,
  type RingGroup,
} from './gradient-sync.js';
import { accuracyOf, addConfusion, argmaxRows, confusionMatrix, perClassAccuracy, stepLr } from './metrics.js';
import { firstTrainableStage, type Network } from './network.js';
import type { EpochMetrics, TrainProgress, TrainResult } from './result.js';
import { Sgd } from './sgd.js';

/** The hyper-parameters of the table (@ferry/common) that the trainer itself reads. */
export const TRAINER_HYPER_PARAMETERS = ['epochs', 'lr', 'momentum', 'weightDecay', 'lrStepEpochs', 'lrGamma'] as const;
type TrainerHyperParameters = Pick<TrainingHyperParameters, (typeof TRAINER_HYPER_PARAMETERS)[number]>;

/** One training run as the trainer takes it: the table's values it reads, plus its strategy and seed. */
export interface TrainConfig extends TrainerHyperParameters {
  readonly nesterov: boolean;
  readonly strategy: Strategy;
  readonly seed: number;
}

/** The trainer's configuration from anything holding the table's values (a CellConfig, the defaults). */
export function trainConfigOf(
  hyper: TrainerHyperParameters,
  rest: { readonly strategy: Strategy; readonly seed: number; readonly nesterov?: boolean },
): TrainConfig {
  const picked = Object.fromEntries(TRAINER_HYPER_PARAMETERS.map((k) => [k, hyper[k]])) as TrainerHyperParameters;
  return { ...picked, nesterov: rest.nesterov ?? false, strategy: rest.strategy, seed: rest.seed };
}

export const DEFAULT_TRAIN_CONFIG: TrainConfig = trainConfigOf(TRAINING_DEFAULTS, {
  strategy: { kind: 'finetune' },
  seed: 0,
});

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
  readonly distributed?: RingGroup;
}

const LAST_FILE = 'last.safetensors';
const BEST_FILE = 'best.safetensors';

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

function validate(config: TrainConfig): void {
  const bad = (name: string, why: string): never => {
    throw new InvalidArgumentError(`train config: ${name} ${why}`);
  };
  // The ranges are the cell specification's (@ferry/common), as a sweep checks them.
  for (const name of TRAINER_HYPER_PARAMETERS) {
    const problem = hyperParameterProblem(name, config[name]);
    if (problem) bad(name, `${problem}; allowed: ${hyperParameterRange(name)}`);
  }
  if (config.nesterov && config.momentum === 0) bad('nesterov', 'needs a momentum above 0');
}

/** Every key of a TrainConfig (the Record makes a new one a compile error here), at its place in the hash. */
const HASH_PLACE: Readonly<Record<keyof TrainConfig, number>> = {
  epochs: 0,
  lr: 1,
  momentum: 2,
  weightDecay: 3,
  nesterov: 4,
  lrStepEpochs: 5,
  lrGamma: 6,
  strategy: 7,
  seed: 8,
};
const HASH_ORDER = (Object.keys(HASH_PLACE) as (keyof TrainConfig)[]).sort((a, b) => HASH_PLACE[a] - HASH_PLACE[b]);

export function configHash(arch: string, numClasses: number, config: TrainConfig): string {
  // A strategy whose meaning changed (revision > 1) never resumes a checkpoint of the old meaning.
  const revision = STRATEGIES[config.strategy.kind].revision;
  // The keys in the order checkpoints have always been hashed with (a TrainConfig's own order may
  // change; an existing checkpoint's hash must not).
  const ordered = Object.fromEntries(HASH_ORDER.map((k) => [k, config[k]]));
  const canon = JSON.stringify({
    arch,
    numClasses,
    ...ordered,
    strategy: strategyName(config.strategy),
    ...(revision > 1 ? { strategyRevision: revision } : {}),
  });
  return createHash('sha256').update(canon).digest('hex').slice(0, 16);
}

/** An evaluation over a whole val set. */
export interface Evaluation {
  readonly loss: number;
  readonly confusion: number[][];
  readonly predictions: Int32Array;
  readonly labels: Int32Array;
}

/** What resuming found: the epochs done, and the best epoch so far. */
interface RunState {
  readonly history: EpochMetrics[];
  readonly best: BestWeights;
  readonly start: number;
}

/** Running sums over one epoch's training steps. */
interface EpochTally {
  lossSum: number;
  correct: number;
  seen: number;
  dataWaitMs: number;
  readonly t0: number;
}

/** A step whose outcome is still being read back (see localStep). */
interface InFlight {
  readonly outcome: Promise<CountedOutcome>;
  readonly step: number;
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason ?? new Error('aborted');
}

/**
 * One training run with the study's semantics: per epoch a pass over `train` (StepLR learning rate,
 * SGD with torch momentum), a pass over `val`, best-val weights kept, a checkpoint written. The
 * same loop runs alone or as one rank of a data-parallel group: what differs is the GradientSync
 * it is given (gradient-sync.ts).
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
  private readonly sync: GradientSync;
  /** This epoch's split of step time (reported for data-parallel ranks). */
  private share = { steps: 0, computeMs: 0, allReduceMs: 0 };
  /** Images per forward/backward chunk (0: the whole batch). */
  private readonly microBatch: number;

  constructor(private readonly options: TrainerOptions) {
    validate(options.config);
    // The backward frees what each node spent as it goes (PyTorch's peak, not twice it).
    installLeanGradients();
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
    this.sync = gradientSync(options.distributed);
    // A data-parallel rank's batch is already its shard (batchSize / worldSize): taken whole.
    this.microBatch = options.distributed ? 0 : (options.microBatch ?? 0);
  }

  /**
   * One SGD step on a batch; resolves to the summed loss and the number of correct predictions.
   * With `microBatch` set below the batch size, the batch is processed in chunks whose gradients
   * are averaged (weighted by chunk size) before the single update: the memory of a chunk, the
   * update of the batch. BatchNorm then normalises per chunk, as nn.DataParallel does per GPU in
   * the study.
   */
  async trainStep(batch: Batch, lr: number, rng?: Rng): Promise<StepOutcome> {
    const local = this.localStep(batch, rng);
    this.apply(local.grads, lr);
    return local.read();
  }

  /**
   * One step of the training loop: this replica's gradients, synchronised, one update. Resolves
   * once the update is queued; the outcome is read back after the next step is queued (on a GPU,
   * the device runs this step while the host queues the next).
   */
  private async step(batch: Batch, lr: number, tag: string, rng: Rng): Promise<{ outcome: Promise<CountedOutcome> }> {
    const t0 = performance.now();
    const local = this.localStep(batch, rng);
    const t1 = performance.now();
    const synced = await this.sync.average(local, this.trainable, tag);
    const t2 = performance.now();
    this.apply(synced.grads, lr);
    const share = this.share;
    share.steps++;
    share.computeMs += t1 - t0 + (performance.now() - t2);
    share.allReduceMs += t2 - t1;
    const outcome = synced.read();
    // Read back later; never an unhandled rejection meanwhile.
    outcome.catch(() => undefined);
    return { outcome };
  }

  /** The SGD update with these gradients, which it frees. */
  private apply(grads: Map<string, tf.Tensor>, lr: number): void {
    this.sgd.step(this.trainable, grads, lr);
    for (const g of grads.values()) g.dispose();
  }

  /**
   * Queues one batch's forward and backward (in micro-batches when set) and returns the gradients
   * and how to read the outcome back. Nothing here waits for the device.
   */
  private localStep(batch: Batch, rng?: Rng): LocalStep {
    const n = batch.labels.length;
    const micro = this.microBatch && this.microBatch < n ? this.microBatch : n;
    const read = (pending: readonly PendingOutcome[]) => () => readOutcome(pending).then((r) => ({ ...r, n }));
    if (micro === n) {
      const r = this.forwardBackward(batch, rng);
      return { grads: r.grads, read: read([r.pending]) };
    }
    const per = batch.x.length / n;
    const itemShape = batch.shape.slice(1);
    let accum = new Map<string, tf.Tensor>();
    const pending: PendingOutcome[] = [];
    for (let s = 0; s < n; s += micro) {
      const m = Math.min(micro, n - s);
      const chunk = {
        x: batch.x.subarray(s * per, (s + m) * per),
        shape: [m, ...itemShape],
        labels: batch.labels.subarray(s, s + m),
      };
      const r = this.forwardBackward(chunk, rng);
      pending.push(r.pending);
      accum = accumulate(accum, r.grads, m / n);
    }
    return { grads: accum, read: read(pending) };
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
        return softmaxCrossEntropy(logits, labels, model.numClasses);
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
  async evaluate(source: BatchSource, opTag = 'eval'): Promise<Evaluation> {
    const sums = await this.sync.sumEvaluation(await this.evaluateLocally(source), opTag);
    return {
      loss: sums.count === 0 ? 0 : sums.lossSum / sums.count,
      confusion: sums.confusion,
      predictions: Int32Array.from(sums.predictions),
      labels: Int32Array.from(sums.labels),
    };
  }

  /** This replica's sums over a source (its shard in a data-parallel group). */
  private async evaluateLocally(source: BatchSource): Promise<EvalSums> {
    const net = this.options.network;
    const k = net.model.numClasses;
    const confusion = confusionMatrix([], [], k);
    const predictions: number[] = [];
    const labels: number[] = [];
    let lossSum = 0;
    let count = 0;
    for await (const batch of source.batches(0, this.options.config.seed)) {
      const n = batch.labels.length;
      const [lossT, logitsT] = tf.tidy(() => {
        const x = tf.tensor(batch.x, [...batch.shape]);
        const logits = net.runStages(x, this.inputStage, net.model.stages.length, { training: false }) as tf.Tensor2D;
        return [softmaxCrossEntropy(logits, tf.tensor1d(batch.labels, 'int32'), k), logits] as const;
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
    return { confusion, lossSum, count, predictions, labels };
  }

  async run(): Promise<TrainResult> {
    const { network, config } = this.options;
    const state = await this.resume();
    // Every rank starts from rank 0's weights (after any resume).
    await this.sync.broadcast([...network.variables.values()], 'init/weights');
    const wallStart = performance.now();
    let trainImages = 0;
    let trainMsTotal = 0;
    for (let epoch = state.start; epoch < config.epochs; epoch++) {
      throwIfAborted(this.options.signal);
      this.share = { steps: 0, computeMs: 0, allReduceMs: 0 };
      const { metrics, seen, val } = await this.epoch(epoch);
      state.history.push(metrics);
      trainImages += seen;
      trainMsTotal += metrics.trainMs;
      const improved = await this.keepIfBest(state.best, metrics, val);
      const allReduce = this.options.distributed
        ? { ...this.share, bytes: 4 * ([...this.trainable.values()].reduce((a, v) => a + v.size, 0) + 3) }
        : undefined;
      this.options.onProgress?.({ type: 'epoch', metrics, best: improved, ...(allReduce ? { allReduce } : {}) });
      await this.writeCheckpoint(state, epoch);
    }
    state.best.restoreInto(network);
    return this.result(state, performance.now() - wallStart, trainImages, trainMsTotal);
  }

  /** One epoch: a pass over `train`, the replicas' BatchNorm statistics averaged, a pass over `val`. */
  private async epoch(epoch: number): Promise<{ metrics: EpochMetrics; seen: number; val: Evaluation }> {
    const { config, network } = this.options;
    const lr = stepLr(config.lr, epoch, config.lrStepEpochs, config.lrGamma);
    const tally = await this.trainEpoch(epoch, lr);
    const trainMs = performance.now() - tally.t0;
    // Each replica estimated the running statistics on its own shard.
    await this.sync.averageVariables(
      network,
      batchNormStatNames(network, 0, network.model.stages.length),
      `bn/${epoch}`,
    );
    const v0 = performance.now();
    const val = await this.evaluate(this.options.val, `epoch${epoch}`);
    const valMs = performance.now() - v0;
    const { seen } = tally;
    const metrics: EpochMetrics = {
      epoch,
      lr,
      trainLoss: seen === 0 ? 0 : tally.lossSum / seen,
      trainAccuracy: seen === 0 ? 0 : tally.correct / seen,
      valLoss: val.loss,
      valAccuracy: accuracyOf(val.confusion),
      confusion: val.confusion,
      perClassAccuracy: perClassAccuracy(val.confusion),
      trainMs,
      valMs,
      dataWaitMs: tally.dataWaitMs,
      imagesPerSec: (seen / trainMs) * 1000,
    };
    return { metrics, seen, val };
  }

  /** The epoch's pass over `train`: each step's outcome is accounted while the next one runs. */
  private async trainEpoch(epoch: number, lr: number): Promise<EpochTally> {
    const { config, signal } = this.options;
    const rng = Rng.fromSeed(streamSeed(config.seed, epoch, STREAM_DROPOUT));
    const tally: EpochTally = { lossSum: 0, correct: 0, seen: 0, dataWaitMs: 0, t0: performance.now() };
    let inFlight: InFlight | undefined;
    let step = 0;
    const it = this.options.train.batches(epoch, config.seed)[Symbol.asyncIterator]();
    for (;;) {
      const w0 = performance.now();
      const next = await it.next();
      tally.dataWaitMs += performance.now() - w0;
      if (next.done) break;
      if (signal?.aborted) {
        await it.return?.();
        throwIfAborted(signal);
      }
      const { outcome } = await this.step(next.value, lr, `${epoch}/${step}`, rng);
      if (inFlight) await this.account(tally, epoch, inFlight);
      inFlight = { outcome, step };
      step++;
    }
    if (inFlight) await this.account(tally, epoch, inFlight);
    return tally;
  }

  /** Adds a step's outcome to the epoch's sums and reports the step. */
  private async account(tally: EpochTally, epoch: number, f: InFlight): Promise<void> {
    const r = await f.outcome;
    if (!Number.isFinite(r.lossSum)) throw new NonFiniteLossError(epoch, f.step, r.lossSum / r.n);
    tally.lossSum += r.lossSum;
    tally.correct += r.correct;
    tally.seen += r.n;
    const { config, train } = this.options;
    const ips = (tally.seen / (performance.now() - tally.t0)) * 1000;
    const remainingImages = (config.epochs - epoch) * train.size - tally.seen;
    this.options.onProgress?.({
      type: 'step',
      epoch,
      step: f.step + 1,
      stepsPerEpoch: Math.ceil(train.size / train.batchSize),
      loss: r.lossSum / r.n,
      imagesPerSec: ips,
      etaMs: (remainingImages / ips) * 1000,
    });
  }

  /** Keeps the epoch's weights when it is the best so far, and writes them (`best.safetensors`). */
  private async keepIfBest(best: BestWeights, metrics: EpochMetrics, val: Evaluation): Promise<boolean> {
    const { network, checkpointDir } = this.options;
    if (!best.offer(metrics.epoch, metrics.valAccuracy, val, network, this.changing)) return false;
    if (checkpointDir && this.sync.writesFiles)
      await saveWeights(path.join(checkpointDir, BEST_FILE), await network.exportState(), {
        ferry_best_epoch: String(metrics.epoch),
        ferry_arch: network.model.arch,
      });
    return true;
  }

  /** Writes `last.safetensors` after an epoch: weights, momentum, history and the best epoch so far. */
  private async writeCheckpoint(state: RunState, epoch: number): Promise<void> {
    const { network, config, checkpointDir } = this.options;
    if (!checkpointDir || !this.sync.writesFiles) return;
    const model = network.model;
    const lastFile = path.join(checkpointDir, LAST_FILE);
    const meta: CheckpointMeta = {
      format: CHECKPOINT_FORMAT,
      arch: model.arch,
      numClasses: model.numClasses,
      strategy: strategyName(config.strategy),
      epochsDone: epoch + 1,
      seed: config.seed,
      history: state.history,
      bestValAccuracy: state.best.accuracy,
      bestEpoch: state.best.epoch,
      bestPredictions: state.best.predictions,
      valLabels: state.best.valLabels,
      configHash: configHash(model.arch, model.numClasses, config),
    };
    await saveCheckpoint(lastFile, network, this.sgd, meta);
    this.options.onProgress?.({ type: 'checkpoint', epoch, file: lastFile });
  }

  /** Continues from `last.safetensors` when the checkpoint directory has one (of this configuration). */
  private async resume(): Promise<RunState> {
    const { network, config, checkpointDir } = this.options;
    const state: RunState = { history: [], best: new BestWeights(), start: 0 };
    const lastFile = checkpointDir ? path.join(checkpointDir, LAST_FILE) : undefined;
    if (!lastFile || !existsSync(lastFile)) return state;
    const model = network.model;
    const hash = configHash(model.arch, model.numClasses, config);
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
    const bestFile = path.join(checkpointDir!, BEST_FILE);
    state.best.resume(ck.meta, existsSync(bestFile) ? (await readWeightsFile(bestFile)).tensors : undefined);
    return { ...state, history: [...ck.meta.history], start: ck.meta.epochsDone };
  }

  private result(state: RunState, wallMs: number, trainImages: number, trainMs: number): TrainResult {
    const { best } = state;
    const bestMetrics = state.history.find((h) => h.epoch === best.epoch);
    return {
      epochs: state.history,
      bestValAccuracy: best.accuracy,
      bestEpoch: best.epoch,
      confusion: bestMetrics?.confusion ?? [],
      perClassAccuracy: bestMetrics?.perClassAccuracy ?? [],
      valPredictions: best.predictions,
      valLabels: best.valLabels,
      wallMs,
      imagesPerSec: trainMs > 0 ? (trainImages / trainMs) * 1000 : 0,
      resumedFromEpoch: state.start,
    };
  }

  dispose(): void {
    this.sgd.dispose();
  }
}

/** Gradients accumulated over micro-batches: accum + weight * grads (frees the inputs). */
function accumulate(
  accum: Map<string, tf.Tensor>,
  grads: Map<string, tf.Tensor>,
  weight: number,
): Map<string, tf.Tensor> {
  const next = new Map<string, tf.Tensor>();
  for (const [name, g] of grads) {
    const prev = accum.get(name);
    next.set(
      name,
      tf.tidy(() => (prev ? tf.add(prev, tf.mul(g, weight)) : tf.mul(g, weight))),
    );
    g.dispose();
    prev?.dispose();
  }
  return next;
}
