import { STRATEGIES, TRAINING_DEFAULTS } from '@ferry/common';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError } from './errors.js';
import { DecodePool } from './data/decode-pool.js';
import { FeatureCache, contentHash, sha256File, type FeatureKey } from './data/feature-cache.js';
import { openImageFolder, type Sample } from './data/folder.js';
import { ImageFolderSource, type SkippedFile } from './data/folder-source.js';
import type { ColorMode } from './data/image.js';
import { studyTransforms } from './data/transforms.js';
import { buildModel, getZooEntry } from './models/zoo.js';
import { ArrayBatchSource, type BatchSource } from './train/data.js';
import { Network, firstTrainableStage, parseStrategy } from './train/network.js';
import type { EpochMetrics, TrainProgress } from './train/result.js';
import { Trainer, averageOverRing, type TrainConfig } from './train/trainer.js';
import {
  adaptBatchNorm,
  assignVariables,
  batchNormStatNames,
  batchNormStatsHash,
  readVariables,
} from './train/batchnorm.js';
import type { RingTransport } from './train/collective.js';
import { readWeightsFile, resolveWeights } from './weights/load.js';

/** Everything that defines one training run (a sweep cell, or `ferry train`). Serialisable. */
export interface CellConfig {
  /** ImageFolder root (train/ and val/ class folders, or class folders with `valFraction`). */
  readonly dataset: string;
  readonly valFraction?: number;
  readonly model: string;
  /** A .pth / .safetensors / ferry checkpoint, or null for torchvision's random initialisation. */
  readonly weights: string | null;
  readonly color: ColorMode;
  /** `finetune`, `freeze`, `probe`, `adapt` or `freezeUntil:<stage>` (@ferry/common's STRATEGIES). */
  readonly strategy: string;
  readonly epochs: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly momentum: number;
  readonly weightDecay: number;
  readonly lrStepEpochs: number;
  readonly lrGamma: number;
  readonly seed: number;
  /** Crop size fed to the network (224 in the study); Resize is 256/224 of it. */
  readonly imageSize: number;
  /** Frozen backbone in inference mode (`probe`, `adapt`): compute its features once and train the head on them. */
  readonly featureCache: boolean;
  /**
   * 0: no augmentation (training images get the val transform). K >= 1: random augmentation; with
   * the feature cache, K augmented views of every training image are cached and epoch e uses view
   * e mod K (more views: closer to fresh augmentation each epoch, K times the cache cost).
   */
  readonly augmentViews: number;
  /** Images per forward/backward chunk (gradients averaged over the batch); 0: automatic. */
  readonly microBatch: number;
}

/**
 * Training activations per image at 224 px relative to resnet18 (about 128 MB on TF.js), for the
 * automatic micro-batch: wasm is a 32-bit address space (4 GB), and resnet18 at batch 32 / 224 px
 * does not fit in it.
 */
const ACTIVATION_FACTOR: Readonly<Record<string, number>> = {
  resnet18: 1,
  resnet34: 1.5,
  resnet50: 3.2,
  mobilenet_v2: 2.2,
};

/** Largest chunk that fits the backend's memory for training; the batch itself where it all fits. */
export function autoMicroBatch(backend: string, model: string, imageSize: number, batchSize: number): number {
  if (backend !== 'wasm') return batchSize;
  const perImageMb = 128 * (ACTIVATION_FACTOR[model] ?? 0.1) * (imageSize / 224) ** 2;
  return Math.max(1, Math.min(batchSize, Math.floor(2048 / perImageMb)));
}

/** The study's cell: the hyper-parameters' defaults are @ferry/common's table (TRAINING_DEFAULTS). */
export const DEFAULT_CELL: Omit<CellConfig, 'dataset' | 'model' | 'weights'> = {
  color: 'rgb',
  strategy: 'finetune',
  seed: 0,
  ...TRAINING_DEFAULTS,
};

export interface CellRunOptions {
  /** Checkpoints (last/best) go here; an existing `last.safetensors` is resumed. */
  readonly outDir?: string;
  /** Feature cache root (default: `<outDir>/features`, or none). */
  readonly cacheDir?: string;
  readonly decodeThreads?: number;
  readonly backend: { readonly name: string; readonly device: string };
  readonly onProgress?: (
    p:
      | TrainProgress
      | { readonly type: 'features'; readonly split: string; readonly done: number; readonly total: number },
  ) => void;
  readonly onWarning?: (message: string) => void;
  readonly signal?: AbortSignal;
  /**
   * Data-parallel: this process is one rank of a group. Each rank reads its shard of every epoch
   * with batchSize / worldSize images per step; the feature cache is not used.
   */
  readonly distributed?: { readonly transport: RingTransport; readonly deadlineMs: number };
}

/** What a run produces: the study's numbers plus how they were obtained. */
export interface CellResult {
  readonly config: CellConfig;
  readonly classes: readonly string[];
  readonly trainImages: number;
  readonly valImages: number;
  readonly epochs: readonly EpochMetrics[];
  readonly bestValAccuracy: number;
  readonly bestEpoch: number;
  readonly confusion: readonly (readonly number[])[];
  readonly perClassAccuracy: readonly number[];
  /**
   * At the best epoch: the class predicted for every val image, in val order, with the labels, and
   * a hash of the val image list (relative paths and labels) that says which cells saw the same
   * images, so their predictions can be compared image by image (paired tests).
   */
  readonly valPredictions: readonly number[];
  readonly valLabels: readonly number[];
  readonly valSetHash: string;
  readonly skipped: readonly SkippedFile[];
  readonly wallMs: number;
  readonly imagesPerSec: number;
  readonly featureCache: {
    readonly used: boolean;
    readonly hits: number;
    readonly misses: number;
    readonly ms: number;
  };
  readonly backend: string;
  readonly device: string;
  readonly resumedFromEpoch: number;
  readonly finishedAt: string;
}

export function validateCell(c: CellConfig): void {
  const bad = (field: string, why: string): never => {
    throw new InvalidArgumentError(`${field}: ${why}`);
  };
  if (!c.dataset) bad('dataset', 'is required');
  getZooEntry(c.model);
  if (c.color !== 'rgb' && c.color !== 'gray') bad('color', `must be rgb or gray (got ${String(c.color)})`);
  parseStrategy(c.strategy);
  if (!Number.isInteger(c.batchSize) || c.batchSize < 1)
    bad('batchSize', `must be a positive integer (got ${c.batchSize})`);
  if (!Number.isInteger(c.imageSize) || c.imageSize < 16)
    bad('imageSize', `must be an integer >= 16 (got ${c.imageSize})`);
  if (!Number.isInteger(c.augmentViews) || c.augmentViews < 0) bad('augmentViews', 'must be an integer >= 0');
  if (!Number.isInteger(c.microBatch) || c.microBatch < 0) bad('microBatch', 'must be an integer >= 0 (0: automatic)');
  if (c.valFraction !== undefined && !(c.valFraction > 0 && c.valFraction < 1))
    bad('valFraction', 'must be between 0 and 1');
}

/**
 * Runs one cell end to end: dataset checks, weights, the study's training loop, best-val result.
 * The worker and `ferry train` both call this; it holds no network code.
 */
export async function runCell(config: CellConfig, options: CellRunOptions): Promise<CellResult> {
  validateCell(config);
  const started = performance.now();
  const folder = await openImageFolder(config.dataset, {
    ...(config.valFraction !== undefined ? { valFraction: config.valFraction } : {}),
    seed: config.seed,
  });
  if (folder.skippedLinks.length > 0) {
    const shown = folder.skippedLinks.slice(0, 5).map((l) => path.relative(config.dataset, l));
    options.onWarning?.(
      `skipped ${folder.skippedLinks.length} symbolic link(s) in ${config.dataset} (not followed; copy the files in instead): ${shown.join(', ')}${folder.skippedLinks.length > 5 ? ', ...' : ''}`,
    );
  }
  const model = buildModel(config.model, folder.classes.length);
  let resolved;
  if (config.weights) {
    const { tensors } = await readWeightsFile(config.weights);
    resolved = resolveWeights(model, tensors, config.weights);
    if (resolved.headReplaced)
      options.onWarning?.(
        `${path.basename(config.weights)}: ${resolved.fileClasses}-way classifier replaced by a new ${folder.classes.length}-way head`,
      );
  }
  const network = Network.create(model, { seed: config.seed, ...(resolved ? { weights: resolved } : {}) });
  const pool = new DecodePool(options.decodeThreads ?? Math.max(1, os.availableParallelism()));
  const trainConfig: TrainConfig = {
    epochs: config.epochs,
    lr: config.lr,
    momentum: config.momentum,
    weightDecay: config.weightDecay,
    nesterov: false,
    lrStepEpochs: config.lrStepEpochs,
    lrGamma: config.lrGamma,
    strategy: parseStrategy(config.strategy),
    seed: config.seed,
  };
  const first = firstTrainableStage(model, trainConfig.strategy);
  if (first === 0 && STRATEGIES[trainConfig.strategy.kind].frozenBatchNorm !== null) {
    throw new InvalidArgumentError(`${config.strategy} freezes nothing: its first trained stage is the model's first`);
  }
  const dist = options.distributed;
  const k = dist?.transport.worldSize ?? 1;
  if (config.batchSize % k !== 0)
    throw new InvalidArgumentError(
      `batchSize ${config.batchSize} must be divisible by the ${k} workers of a data-parallel cell`,
    );
  const rankBatch = config.batchSize / k;
  const shard = (pad: boolean) => (dist ? { shard: { rank: dist.transport.rank, worldSize: k, pad } } : {});
  const strategy = STRATEGIES[trainConfig.strategy.kind];
  const useCache = config.featureCache && !dist && strategy.cachesFeatures;
  const specs = studyTransforms(config.imageSize, config.color);
  const skippedWarn = (s: SkippedFile): void => options.onWarning?.(`skipped ${s.file}: ${s.reason}`);
  const trainImages = new ImageFolderSource({
    samples: folder.train,
    classNames: folder.classes,
    spec: config.augmentViews === 0 ? specs.val : specs.train,
    batchSize: rankBatch,
    shuffle: !useCache,
    pool,
    onSkip: skippedWarn,
    ...shard(true),
  });
  const valImages = new ImageFolderSource({
    samples: folder.val,
    classNames: folder.classes,
    spec: specs.val,
    batchSize: rankBatch,
    shuffle: false,
    pool,
    onSkip: skippedWarn,
    ...shard(false),
  });
  const cacheStats = { used: false, hits: 0, misses: 0, ms: 0 };
  let train: BatchSource = trainImages;
  let val: BatchSource = valImages;
  let inputStage = 0;
  try {
    const cacheDir = options.cacheDir ?? (options.outDir ? path.join(options.outDir, 'features') : undefined);
    if (useCache && !cacheDir) throw new InvalidArgumentError('featureCache needs an outDir or a cacheDir');
    const cache = useCache ? new FeatureCache(cacheDir!) : undefined;
    // What cached features and adapted statistics depend on (only computed when there is a cache).
    const weightsId = cache && config.weights ? await sha256File(config.weights) : `random:${config.seed}`;
    const trainImagesHash = cache ? await contentHash(folder.train) : '';
    if (strategy.frozenBatchNorm === 'adapted') {
      // Shuffled batches of augmented training images, as the study's freeze normalises them.
      const adaptSource = new ImageFolderSource({
        samples: folder.train,
        classNames: folder.classes,
        spec: trainImages.spec,
        batchSize: rankBatch,
        shuffle: true,
        pool,
        onSkip: () => undefined,
        ...shard(false),
      });
      await adaptFrozenBatchNorm(network, adaptSource, first, {
        seed: config.seed,
        ...(cache
          ? {
              cache,
              key: {
                kind: 'bn-adapt',
                arch: model.arch,
                weights: weightsId,
                stage: first,
                spec: trainImages.spec,
                seed: config.seed,
                batchSize: rankBatch,
                images: trainImagesHash,
              },
            }
          : {}),
        ...(dist ? { dist } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
    }
    if (cache) {
      const t0 = performance.now();
      const base = {
        arch: model.arch,
        weights: weightsId,
        stage: first,
        seed: config.seed,
        batchNorm: await batchNormStatsHash(network, first),
      };
      const viewsOf = async (source: ImageFolderSource, split: 'train' | 'val', count: number) => {
        const images = split === 'train' ? trainImagesHash : await contentHash(folder.val);
        const out = [];
        for (let v = 0; v < count; v++) {
          const key: FeatureKey = {
            ...base,
            spec: split === 'train' ? trainImages.spec : valImages.spec,
            view: v,
            images,
          };
          const r = await cache.getOrCompute(key, network, source, (done) =>
            options.onProgress?.({
              type: 'features',
              split: `${split} view ${v + 1}/${count}`,
              done,
              total: source.size,
            }),
          );
          if (r.cached) cacheStats.hits++;
          else cacheStats.misses++;
          out.push(r);
        }
        return out;
      };
      const trainViews = await viewsOf(trainImages, 'train', Math.max(1, config.augmentViews));
      const [valView] = await viewsOf(valImages, 'val', 1);
      const tv = trainViews[0]!;
      train = new ArrayBatchSource(
        trainViews.map((v) => v.features),
        tv.labels,
        [tv.dim],
        folder.classes.length,
        { batchSize: config.batchSize, shuffle: true, classNames: folder.classes },
      );
      val = new ArrayBatchSource(valView!.features, valView!.labels, [valView!.dim], folder.classes.length, {
        batchSize: config.batchSize,
        shuffle: false,
        classNames: folder.classes,
      });
      inputStage = first;
      cacheStats.used = true;
      cacheStats.ms = performance.now() - t0;
    }
    const trainer = new Trainer({
      network,
      config: trainConfig,
      train,
      val,
      inputStage,
      microBatch:
        config.microBatch > 0
          ? config.microBatch
          : autoMicroBatch(options.backend.name, config.model, config.imageSize, rankBatch),
      ...(dist ? { distributed: dist } : {}),
      ...(options.outDir ? { checkpointDir: options.outDir } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    try {
      const r = await trainer.run();
      return {
        config,
        classes: folder.classes,
        trainImages: trainImages.size,
        valImages: valImages.size,
        epochs: r.epochs,
        bestValAccuracy: r.bestValAccuracy,
        bestEpoch: r.bestEpoch,
        confusion: r.bestConfusion,
        perClassAccuracy: r.bestPerClassAccuracy,
        valPredictions: r.bestPredictions,
        valLabels: r.valLabels,
        valSetHash: valSetHash(config.dataset, folder.val),
        skipped: [...trainImages.skipped, ...valImages.skipped],
        wallMs: performance.now() - started,
        imagesPerSec: r.imagesPerSec,
        featureCache: cacheStats,
        backend: options.backend.name,
        device: options.backend.device,
        resumedFromEpoch: r.resumedFromEpoch,
        finishedAt: new Date().toISOString(),
      };
    } finally {
      trainer.dispose();
    }
  } finally {
    network.dispose();
    await pool.close();
  }
}

/**
 * Sets the frozen stages' BatchNorm statistics to the target's (adaptBatchNorm): from the cache
 * when these weights, images, transform and batch size were adapted before; in a data-parallel
 * group each rank adapts on its shard and the ranks average.
 */
async function adaptFrozenBatchNorm(
  network: Network,
  source: ImageFolderSource,
  before: number,
  o: {
    readonly seed: number;
    readonly cache?: FeatureCache;
    readonly key?: object;
    readonly dist?: { readonly transport: RingTransport; readonly deadlineMs: number };
    readonly onProgress?: NonNullable<CellRunOptions['onProgress']>;
    readonly signal?: AbortSignal;
  },
): Promise<void> {
  const names = batchNormStatNames(network, 0, before);
  const cached = o.cache && o.key ? await o.cache.getJson<number[][]>(o.key) : undefined;
  if (cached && cached.length === names.length) {
    assignVariables(
      network,
      names,
      cached.map((v) => Float32Array.from(v)),
    );
    return;
  }
  await adaptBatchNorm(network, source, before, {
    seed: o.seed,
    onBatch: (done, total) => o.onProgress?.({ type: 'features', split: 'BatchNorm adaptation', done, total }),
    ...(o.signal ? { signal: o.signal } : {}),
  });
  if (o.dist) await averageOverRing(network, names, o.dist, 'bn/adapt');
  if (o.cache && o.key)
    await o.cache.putJson(
      o.key,
      (await readVariables(network, names)).map((v) => [...v]),
    );
}

/** Which val images, in which order: a hash of their paths relative to the dataset and their labels. */
export function valSetHash(root: string, samples: readonly Sample[]): string {
  const h = createHash('sha256');
  for (const s of samples) h.update(`${s.label}:${path.relative(root, s.file)}\n`);
  return h.digest('hex').slice(0, 16);
}
