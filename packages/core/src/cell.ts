import { STRATEGIES, startsFromScratch, TRAINING_DEFAULTS, type TrainingHyperParameters } from '@ferry/common';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError } from './errors.js';
import { DecodePool } from './data/decode-pool.js';
import { FeatureCache, contentHash, frozenFeatureKey, sha256File } from './data/feature-cache.js';
import { openImageFolder, type ImageFolder, type Sample } from './data/folder.js';
import { ImageFolderSource, type SkippedFile } from './data/folder-source.js';
import type { ColorMode } from './data/image.js';
import { studyTransforms } from './data/transforms.js';
import type { ModelDef } from './models/model.js';
import { buildModel, getZooEntry } from './models/zoo.js';
import { ArrayBatchSource, type BatchSource, type ShardSpec } from './train/data.js';
import { gradientSync, type GradientSync, type RingGroup } from './train/gradient-sync.js';
import { Network, firstTrainableStage, parseStrategy } from './train/network.js';
import type { TrainProgress, TrainResult } from './train/result.js';
import { Trainer, trainConfigOf, type TrainConfig } from './train/trainer.js';
import {
  adaptBatchNorm,
  assignVariables,
  batchNormStatNames,
  batchNormStatsHash,
  readVariables,
} from './train/batchnorm.js';
import { readWeightsFile, resolveWeights, type ResolvedWeights } from './weights/load.js';

/**
 * Everything that defines one training run (a sweep cell, or `ferry train`). Serialisable. Its
 * hyper-parameters (epochs, batch size, learning rate and schedule, image size, feature cache,
 * augmented views, micro-batch) are @ferry/common's table's training ones, with their meaning and
 * range there; this adds what the run is on and where.
 */
export interface CellConfig extends TrainingHyperParameters {
  /** ImageFolder root (train/ and val/ class folders, or class folders with `valFraction`). */
  readonly dataset: string;
  readonly valFraction?: number;
  readonly model: string;
  /** A .pth / .safetensors / ferry checkpoint, or null for torchvision's random initialisation. */
  readonly weights: string | null;
  readonly color: ColorMode;
  /** `finetune`, `freeze`, `probe`, `adapt` or `freezeUntil:<stage>` (@ferry/common's STRATEGIES). */
  readonly strategy: string;
  readonly seed: number;
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
  readonly distributed?: RingGroup;
}

/**
 * What a run produces: the trainer's result (the study's numbers; `wallMs` here is the whole
 * cell's, preparation included) plus how they were obtained.
 */
export interface CellResult extends TrainResult {
  readonly config: CellConfig;
  readonly classes: readonly string[];
  readonly trainImages: number;
  readonly valImages: number;
  /**
   * A hash of the val image list (relative paths and labels): which cells saw the same images, so
   * that their predictions (valPredictions) can be compared image by image (paired tests).
   */
  readonly valSetHash: string;
  readonly skipped: readonly SkippedFile[];
  readonly featureCache: {
    readonly used: boolean;
    readonly hits: number;
    readonly misses: number;
    readonly ms: number;
  };
  readonly backend: string;
  readonly device: string;
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
 * The worker and `ferry train` both call this; it holds no network code. Prepare (data, model,
 * weights, cache), run, result: each a function below.
 */
export async function runCell(given: CellConfig, options: CellRunOptions): Promise<CellResult> {
  validateCell(given);
  const config = scratchConfig(given, options.onWarning);
  const started = performance.now();
  const folder = await openDataset(config, options.onWarning);
  const model = buildModel(config.model, folder.classes.length);
  const weights = config.weights ? await loadWeights(config.weights, model, options.onWarning) : undefined;
  const plan = planCell(config, model, options.distributed);
  const network = Network.create(model, { seed: config.seed, ...(weights ? { weights } : {}) });
  const pool = new DecodePool(options.decodeThreads ?? Math.max(1, os.availableParallelism()));
  try {
    const images = imageSources(config, folder, plan, pool, options.onWarning);
    const inputs = await prepareInputs(config, options, { folder, plan, network, pool, images });
    const r = await train(config, options, plan, network, inputs);
    return cellResult(config, options, { folder, images, inputs, r, wallMs: performance.now() - started });
  } finally {
    network.dispose();
    await pool.close();
  }
}

/** How a cell trains, decided from its configuration before anything is loaded onto the device. */
interface CellPlan {
  readonly trainConfig: TrainConfig;
  /** The first trained stage. */
  readonly first: number;
  /** Images per step on this rank (batchSize / worldSize). */
  readonly rankBatch: number;
  readonly useCache: boolean;
  readonly dist: RingGroup | undefined;
  readonly sync: GradientSync;
}

/** The image sources of this rank (its shard in a data-parallel group). */
interface ImageSources {
  readonly train: ImageFolderSource;
  readonly val: ImageFolderSource;
  /** This rank's shard of a split, as ImageFolderSource options (nothing when alone). */
  readonly shard: (pad: boolean) => { shard?: ShardSpec };
}

/** What the trainer is given: image sources, or cached features entering at the first trained stage. */
interface TrainInputs {
  readonly train: BatchSource;
  readonly val: BatchSource;
  readonly inputStage: number;
  readonly cacheStats: CellResult['featureCache'];
}

/** The image folder, with a warning for the symbolic links it did not follow. */
async function openDataset(config: CellConfig, onWarning: CellRunOptions['onWarning']): Promise<ImageFolder> {
  const folder = await openImageFolder(config.dataset, {
    ...(config.valFraction !== undefined ? { valFraction: config.valFraction } : {}),
    seed: config.seed,
  });
  if (folder.skippedLinks.length > 0) {
    const shown = folder.skippedLinks.slice(0, 5).map((l) => path.relative(config.dataset, l));
    onWarning?.(
      `skipped ${folder.skippedLinks.length} symbolic link(s) in ${config.dataset} (not followed; copy the files in instead): ${shown.join(', ')}${folder.skippedLinks.length > 5 ? ', ...' : ''}`,
    );
  }
  return folder;
}

/** `scratch` trains from torchvision's random initialisation: weights named anyway are not loaded (said). */
function scratchConfig(config: CellConfig, warn?: (message: string) => void): CellConfig {
  if (!startsFromScratch(config.strategy) || config.weights === null) return config;
  warn?.(`strategy scratch starts from random weights; ${config.weights} is not loaded`);
  return { ...config, weights: null };
}

/** The weights file resolved against the model (a classifier of another size is replaced, said). */
async function loadWeights(
  file: string,
  model: ModelDef,
  onWarning: CellRunOptions['onWarning'],
): Promise<ResolvedWeights> {
  const { tensors } = await readWeightsFile(file);
  const resolved = resolveWeights(model, tensors, file);
  if (resolved.headReplaced)
    onWarning?.(
      `${path.basename(file)}: ${resolved.fileClasses}-way classifier replaced by a new ${model.numClasses}-way head`,
    );
  return resolved;
}

/** The training configuration and the cell's shape (stages, per-rank batch, cache); throws if inconsistent. */
function planCell(config: CellConfig, model: ModelDef, dist: RingGroup | undefined): CellPlan {
  const trainConfig = trainConfigOf(config, { strategy: parseStrategy(config.strategy), seed: config.seed });
  const first = firstTrainableStage(model, trainConfig.strategy);
  const strategy = STRATEGIES[trainConfig.strategy.kind];
  if (first === 0 && strategy.frozenBatchNorm !== null) {
    throw new InvalidArgumentError(`${config.strategy} freezes nothing: its first trained stage is the model's first`);
  }
  const k = dist?.transport.worldSize ?? 1;
  if (config.batchSize % k !== 0)
    throw new InvalidArgumentError(
      `batchSize ${config.batchSize} must be divisible by the ${k} workers of a data-parallel cell`,
    );
  return {
    trainConfig,
    first,
    rankBatch: config.batchSize / k,
    useCache: config.featureCache && !dist && strategy.cachesFeatures,
    dist,
    sync: gradientSync(dist),
  };
}

function imageSources(
  config: CellConfig,
  folder: ImageFolder,
  plan: CellPlan,
  pool: DecodePool,
  onWarning: CellRunOptions['onWarning'],
): ImageSources {
  const { dist, rankBatch } = plan;
  const shard = (pad: boolean) =>
    dist ? { shard: { rank: dist.transport.rank, worldSize: dist.transport.worldSize, pad } } : {};
  const specs = studyTransforms(config.imageSize, config.color);
  const common = {
    classNames: folder.classes,
    batchSize: rankBatch,
    pool,
    onSkip: (s: SkippedFile): void => onWarning?.(`skipped ${s.file}: ${s.reason}`),
  };
  const train = new ImageFolderSource({
    ...common,
    samples: folder.train,
    spec: config.augmentViews === 0 ? specs.val : specs.train,
    shuffle: !plan.useCache,
    ...shard(true),
  });
  const val = new ImageFolderSource({
    ...common,
    samples: folder.val,
    spec: specs.val,
    shuffle: false,
    ...shard(false),
  });
  return { train, val, shard };
}

/** A cell whose data, plan, network and decode pool are ready, before its inputs are. */
interface PreparedCell {
  readonly folder: ImageFolder;
  readonly plan: CellPlan;
  readonly network: Network;
  readonly pool: DecodePool;
  readonly images: ImageSources;
}

/**
 * The frozen stages' BatchNorm adapted when the strategy says so, then what the trainer reads: the
 * images, or, with the feature cache, the backbone's features of them (computed once, kept on disk).
 */
async function prepareInputs(config: CellConfig, options: CellRunOptions, cell: PreparedCell): Promise<TrainInputs> {
  const { folder, plan, images } = cell;
  const cacheDir = options.cacheDir ?? (options.outDir ? path.join(options.outDir, 'features') : undefined);
  if (plan.useCache && !cacheDir) throw new InvalidArgumentError('featureCache needs an outDir or a cacheDir');
  const cache = plan.useCache ? new FeatureCache(cacheDir!) : undefined;
  // What cached features and adapted statistics depend on (only computed when there is a cache).
  const ids: CacheIds = {
    weights: cache && config.weights ? await sha256File(config.weights) : `random:${config.seed}`,
    trainImages: cache ? await contentHash(folder.train) : '',
  };
  if (STRATEGIES[plan.trainConfig.strategy.kind].frozenBatchNorm === 'adapted') {
    await adaptFrozenBatchNorm(config, options, { ...cell, cache, ids });
  }
  if (!cache) {
    return {
      train: images.train,
      val: images.val,
      inputStage: 0,
      cacheStats: { used: false, hits: 0, misses: 0, ms: 0 },
    };
  }
  return cachedFeatures(config, options, { ...cell, cache, ids });
}

/** What cached features and adapted statistics are keyed by, besides the transform. */
interface CacheIds {
  /** SHA-256 of the weights file, or the seed of a random initialisation. */
  readonly weights: string;
  /** Content hash of the training images. */
  readonly trainImages: string;
}

/**
 * Sets the frozen stages' BatchNorm statistics to the target's (adaptBatchNorm) on shuffled
 * batches of augmented training images, as the study's freeze normalises them: from the cache
 * when these weights, images, transform and batch size were adapted before; in a data-parallel
 * group each rank adapts on its shard and the ranks average.
 */
async function adaptFrozenBatchNorm(
  config: CellConfig,
  options: CellRunOptions,
  cell: PreparedCell & {
    readonly cache: FeatureCache | undefined;
    readonly ids: CacheIds;
  },
): Promise<void> {
  const { folder, plan, network, images, cache } = cell;
  const names = batchNormStatNames(network, 0, plan.first);
  const key = {
    kind: 'bn-adapt',
    arch: network.model.arch,
    weights: cell.ids.weights,
    stage: plan.first,
    spec: images.train.spec,
    seed: config.seed,
    batchSize: plan.rankBatch,
    images: cell.ids.trainImages,
  };
  const cached = cache ? await cache.getJson<number[][]>(key) : undefined;
  if (cached && cached.length === names.length) {
    assignVariables(
      network,
      names,
      cached.map((v) => Float32Array.from(v)),
    );
    return;
  }
  const source = new ImageFolderSource({
    samples: folder.train,
    classNames: folder.classes,
    spec: images.train.spec,
    batchSize: plan.rankBatch,
    shuffle: true,
    pool: cell.pool,
    onSkip: () => undefined,
    ...images.shard(false),
  });
  await adaptBatchNorm(network, source, plan.first, {
    seed: config.seed,
    onBatch: (done, total) => options.onProgress?.({ type: 'features', split: 'BatchNorm adaptation', done, total }),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  await plan.sync.averageVariables(network, names, 'bn/adapt');
  if (cache)
    await cache.putJson(
      key,
      (await readVariables(network, names)).map((v) => [...v]),
    );
}

/**
 * The backbone's features of the training images (K augmented views) and of the val images, from
 * the cache or computed into it; the head trains on them (batches enter at the first trained stage).
 */
async function cachedFeatures(
  config: CellConfig,
  options: CellRunOptions,
  cell: Omit<PreparedCell, 'pool'> & {
    readonly cache: FeatureCache;
    readonly ids: CacheIds;
  },
): Promise<TrainInputs> {
  const { folder, plan, network, images, cache } = cell;
  const t0 = performance.now();
  const stats = { used: true, hits: 0, misses: 0, ms: 0 };
  const base = {
    arch: network.model.arch,
    weights: cell.ids.weights,
    stage: plan.first,
    seed: config.seed,
    batchNorm: await batchNormStatsHash(network, plan.first),
  };
  const viewsOf = async (source: ImageFolderSource, split: 'train' | 'val', count: number) => {
    const hash = split === 'train' ? cell.ids.trainImages : await contentHash(folder.val);
    const out = [];
    for (let v = 0; v < count; v++) {
      const key = frozenFeatureKey({ ...base, spec: source.spec, view: v, images: hash });
      const r = await cache.getOrCompute(key, network, source, (done) =>
        options.onProgress?.({ type: 'features', split: `${split} view ${v + 1}/${count}`, done, total: source.size }),
      );
      if (r.cached) stats.hits++;
      else stats.misses++;
      out.push(r);
    }
    return out;
  };
  const trainViews = await viewsOf(images.train, 'train', Math.max(1, config.augmentViews));
  const [valView] = await viewsOf(images.val, 'val', 1);
  const tv = trainViews[0]!;
  const sourceOptions = { batchSize: config.batchSize, classNames: folder.classes };
  const classes = folder.classes.length;
  return {
    train: new ArrayBatchSource(
      trainViews.map((v) => v.features),
      tv.labels,
      [tv.dim],
      classes,
      { ...sourceOptions, shuffle: true },
    ),
    val: new ArrayBatchSource(valView!.features, valView!.labels, [valView!.dim], classes, {
      ...sourceOptions,
      shuffle: false,
    }),
    inputStage: plan.first,
    cacheStats: { ...stats, ms: performance.now() - t0 },
  };
}

/** The study's training loop over the prepared inputs. */
async function train(
  config: CellConfig,
  options: CellRunOptions,
  plan: CellPlan,
  network: Network,
  inputs: TrainInputs,
): Promise<TrainResult> {
  const trainer = new Trainer({
    network,
    config: plan.trainConfig,
    train: inputs.train,
    val: inputs.val,
    inputStage: inputs.inputStage,
    microBatch:
      config.microBatch > 0
        ? config.microBatch
        : autoMicroBatch(options.backend.name, config.model, config.imageSize, plan.rankBatch),
    ...(plan.dist ? { distributed: plan.dist } : {}),
    ...(options.outDir ? { checkpointDir: options.outDir } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  try {
    return await trainer.run();
  } finally {
    trainer.dispose();
  }
}

function cellResult(
  config: CellConfig,
  options: CellRunOptions,
  run: {
    readonly folder: ImageFolder;
    readonly images: ImageSources;
    readonly inputs: TrainInputs;
    readonly r: TrainResult;
    readonly wallMs: number;
  },
): CellResult {
  const { folder, images, r } = run;
  return {
    ...r,
    wallMs: run.wallMs,
    config,
    classes: folder.classes,
    trainImages: images.train.size,
    valImages: images.val.size,
    valSetHash: valSetHash(config.dataset, folder.val),
    skipped: [...images.train.skipped, ...images.val.skipped],
    featureCache: run.inputs.cacheStats,
    backend: options.backend.name,
    device: options.backend.device,
    finishedAt: new Date().toISOString(),
  };
}

/** Which val images, in which order: a hash of their paths relative to the dataset and their labels. */
export function valSetHash(root: string, samples: readonly Sample[]): string {
  const h = createHash('sha256');
  for (const s of samples) h.update(`${s.label}:${path.relative(root, s.file)}\n`);
  return h.digest('hex').slice(0, 16);
}
