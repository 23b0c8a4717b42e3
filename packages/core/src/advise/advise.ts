import { advise, domainLevelOfShift, type Advice, type DomainLevel } from '@ferry/common';
import os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { DatasetError, InvalidArgumentError } from '../errors.js';
import { DecodePool } from '../data/decode-pool.js';
import {
  FeatureCache,
  contentHash,
  featureKeyHash,
  frozenFeatureKey,
  sha256File,
  type FeatureKey,
  type FeatureView,
} from '../data/feature-cache.js';
import { openImageFolder, type ImageFolder, type Sample } from '../data/folder.js';
import { ImageFolderSource } from '../data/folder-source.js';
import type { ColorMode } from '../data/image.js';
import { studyTransforms } from '../data/transforms.js';
import type { BnInputMoments } from '../models/layers.js';
import { buildModel, getZooEntry } from '../models/zoo.js';
import { batchNormStatsHash, readVariables } from '../train/batchnorm.js';
import { Network, firstTrainableStage } from '../train/network.js';
import { Rng } from '../util/rng.js';
import { readWeightsFile, resolveWeights } from '../weights/load.js';
import { MomentAccumulator, batchNormShift, holdOut, knnAccuracy, nearestCentroidAccuracy } from './measure.js';

/** What `ferry advise` measures on. Plain data. */
export interface AdviseConfig {
  /** ImageFolder root (train/ and val/, or class folders with `valFraction`): only train/ is read. */
  readonly dataset: string;
  readonly valFraction?: number;
  readonly model: string;
  /** The backbone's weights (.pth, .safetensors, a ferry checkpoint), or null for a random initialisation. */
  readonly weights: string | null;
  readonly color: ColorMode;
  readonly imageSize: number;
  /** Share of each class's training images held out to score the frozen features (0.25). */
  readonly holdOutFraction: number;
  /** Seeds the held-out split (and the dataset split, and a random initialisation): a probe cell of the same seed shares the features. */
  readonly seed: number;
  /** Neighbours of the k-NN classifier. */
  readonly k: number;
  /** Images per forward pass. */
  readonly batchSize: number;
  /**
   * At most this many training images per class are run through the backbone (a seeded sample;
   * 0: all). Bounds the time on large datasets; a sample's features are cached under its own key,
   * which a sweep's probe cells (all images) do not share. Images per class are counted on all.
   */
  readonly maxPerClass: number;
}

export const DEFAULT_ADVISE: Omit<AdviseConfig, 'dataset' | 'model' | 'weights'> = {
  color: 'rgb',
  imageSize: 224,
  holdOutFraction: 0.25,
  seed: 0,
  k: 5,
  batchSize: 32,
  maxPerClass: 0,
};

export interface AdviseRunOptions {
  /** The feature cache (a sweep's probe cells read the same one: `<cache>/features`); none: not kept. */
  readonly cacheDir?: string;
  readonly decodeThreads?: number;
  readonly backend: { readonly name: string; readonly device: string };
  readonly onProgress?: (done: number, total: number) => void;
  readonly onWarning?: (message: string) => void;
}

/** The advisor's report on one dataset: the measurements, then the rule's advice. Plain data. */
export interface DatasetAdvice {
  readonly config: AdviseConfig;
  readonly classes: readonly string[];
  readonly trainImages: number;
  /** Training images that went through the backbone (all decodable ones, or the `maxPerClass` sample). */
  readonly measuredImages: number;
  readonly imagesPerClass: { readonly min: number; readonly median: number; readonly max: number };
  /** Held-out accuracy of the frozen features (`accuracy`: the better of the two classifiers). */
  readonly frozen: {
    readonly fitImages: number;
    readonly heldOutImages: number;
    readonly nearestCentroid: number;
    readonly knn: number;
    readonly k: number;
    readonly accuracy: number;
    readonly chance: number;
  };
  /** The BatchNorm shift (mean Hellinger distance, 0..1) and its level; per layer too. */
  readonly domain: {
    readonly shift: number;
    readonly level: DomainLevel;
    readonly layers: readonly { readonly name: string; readonly shift: number }[];
  };
  /** Whether the features came from the cache, and their key's hash (a probe cell's with the same settings). */
  readonly featureCache: { readonly hit: boolean; readonly key: string | null; readonly ms: number };
  readonly advice: Advice;
  readonly backend: string;
  readonly wallMs: number;
}

/** The frozen pass's outputs: features of the training images and their BatchNorm input moments. */
interface FrozenPass {
  readonly view: FeatureView;
  readonly moments: readonly { name: string; mean: number[]; variance: number[] }[];
}

/**
 * Measures a dataset with the frozen backbone (inference mode, the source's BatchNorm statistics:
 * the `probe` strategy's features, from or into the same cache) and applies the advisor's rule.
 */
export async function adviseDataset(config: AdviseConfig, options: AdviseRunOptions): Promise<DatasetAdvice> {
  const started = performance.now();
  validateAdvise(config);
  const folder = await openImageFolder(config.dataset, {
    ...(config.valFraction !== undefined ? { valFraction: config.valFraction } : {}),
    seed: config.seed,
  });
  const counts = classCounts(folder);
  const samples = sampleTrain(folder, config.maxPerClass, config.seed);
  const model = buildModel(config.model, folder.classes.length);
  const weights = config.weights
    ? resolveWeights(model, (await readWeightsFile(config.weights)).tensors, config.weights)
    : undefined;
  const network = Network.create(model, { seed: config.seed, ...(weights ? { weights } : {}) });
  try {
    const stage = firstTrainableStage(model, { kind: 'probe' });
    const t0 = performance.now();
    const cache = options.cacheDir ? new FeatureCache(options.cacheDir) : undefined;
    const key = cache ? await featureKey(config, samples, network, stage) : undefined;
    const cached = cache && key ? await fromCache(cache, key) : undefined;
    const pass = cached ?? (await frozenPass(config, options, { classes: folder.classes, samples }, network, stage));
    if (cache && key && !cached) await toCache(cache, key, pass);
    const ms = performance.now() - t0;
    const frozen = scoreFeatures(config, pass.view, folder.classes.length);
    const domain = await domainShift(network, pass);
    const sorted = [...counts].sort((a, b) => a - b);
    const median =
      sorted.length % 2
        ? sorted[(sorted.length - 1) / 2]!
        : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
    return {
      config,
      classes: folder.classes,
      trainImages: folder.train.length,
      measuredImages: pass.view.labels.length,
      imagesPerClass: { min: sorted[0]!, median, max: sorted.at(-1)! },
      frozen,
      domain,
      featureCache: { hit: cached !== undefined, key: key ? featureKeyHash(key) : null, ms },
      advice: advise({
        classes: folder.classes.length,
        imagesPerClass: median,
        domain: { level: domain.level, shift: domain.shift },
        frozenAccuracy: frozen.accuracy,
      }),
      backend: options.backend.name,
      wallMs: performance.now() - started,
    };
  } finally {
    network.dispose();
  }
}

function validateAdvise(c: AdviseConfig): void {
  if (!c.dataset) throw new InvalidArgumentError('dataset: is required');
  getZooEntry(c.model);
  if (c.color !== 'rgb' && c.color !== 'gray')
    throw new InvalidArgumentError(`color: must be rgb or gray (got ${String(c.color)})`);
  if (!Number.isInteger(c.imageSize) || c.imageSize < 16)
    throw new InvalidArgumentError(`imageSize: must be an integer >= 16 (got ${c.imageSize})`);
  if (!(c.holdOutFraction > 0 && c.holdOutFraction < 1))
    throw new InvalidArgumentError(`hold-out fraction: must be between 0 and 1 (got ${c.holdOutFraction})`);
  if (!Number.isInteger(c.k) || c.k < 1) throw new InvalidArgumentError(`k: must be a positive integer (got ${c.k})`);
  if (!Number.isInteger(c.maxPerClass) || c.maxPerClass < 0 || c.maxPerClass === 1)
    throw new InvalidArgumentError(`maxPerClass: must be 0 (all) or an integer >= 2 (got ${c.maxPerClass})`);
  if (!Number.isInteger(c.batchSize) || c.batchSize < 1)
    throw new InvalidArgumentError(`batchSize: must be a positive integer (got ${c.batchSize})`);
}

/** Training images per class; every class needs 2 (one to fit, one held out). */
function classCounts(folder: ImageFolder): number[] {
  const counts = folder.classes.map(() => 0);
  for (const s of folder.train) counts[s.label]!++;
  if (folder.classes.length < 2)
    throw new DatasetError(
      `${folder.root} has ${folder.classes.length} class${folder.classes.length === 1 ? '' : 'es'}; the advisor compares classes and needs at least 2`,
    );
  const few = folder.classes.filter((_, c) => counts[c]! < 2);
  if (few.length > 0)
    throw new DatasetError(
      `too few training images to hold any out: ${few.map((c) => `"${c}"`).join(', ')} ${few.length > 1 ? 'have' : 'has'} fewer than 2 in ${folder.root}; the advisor needs at least 2 per class (more for a useful answer)`,
    );
  return counts;
}

/** The training images, or a seeded sample of at most `perClass` of each class (in their order). */
function sampleTrain(folder: ImageFolder, perClass: number, seed: number): readonly Sample[] {
  if (perClass <= 0) return folder.train;
  const byClass = folder.classes.map((_, c) => folder.train.filter((s) => s.label === c));
  const keep = new Set<Sample>();
  byClass.forEach((members, c) => {
    const order = Rng.fromSeed((seed ^ Math.imul(c + 1, 0x85ebca6b)) >>> 0).permutation(members.length);
    for (const i of order.slice(0, perClass)) keep.add(members[i]!);
  });
  return folder.train.filter((s) => keep.has(s));
}

/** The key a `probe` cell of the same model, weights, seed, size and color (with `augmentViews: 0`) uses. */
async function featureKey(
  config: AdviseConfig,
  samples: readonly Sample[],
  network: Network,
  stage: number,
): Promise<FeatureKey> {
  return frozenFeatureKey({
    arch: network.model.arch,
    weights: config.weights ? await sha256File(config.weights) : `random:${config.seed}`,
    stage,
    spec: studyTransforms(config.imageSize, config.color).val,
    seed: config.seed,
    view: 0,
    images: await contentHash(samples),
    batchNorm: await batchNormStatsHash(network, stage),
  });
}

const momentsKey = (key: FeatureKey): object => ({ kind: 'bn-input-moments', features: featureKeyHash(key) });

async function fromCache(cache: FeatureCache, key: FeatureKey): Promise<FrozenPass | undefined> {
  const view = await cache.get(key);
  const moments = view ? await cache.getJson<FrozenPass['moments']>(momentsKey(key)) : undefined;
  return view && moments ? { view, moments } : undefined;
}

async function toCache(cache: FeatureCache, key: FeatureKey, pass: FrozenPass): Promise<void> {
  await cache.put(key, pass.view);
  await cache.putJson(momentsKey(key), pass.moments);
}

/** Images the BatchNorm input moments are pooled over (at least; all when there are fewer). */
const MOMENT_IMAGES = 128;

/**
 * One pass of the frozen stages [0, stage) in inference mode over the training images (val
 * transform, in order): the features, and every BatchNorm layer's input moments pooled over a
 * sample of the images (what the layer sees of this data, to compare with its running statistics).
 */
async function frozenPass(
  config: AdviseConfig,
  options: AdviseRunOptions,
  data: { readonly classes: readonly string[]; readonly samples: readonly Sample[] },
  network: Network,
  stage: number,
): Promise<FrozenPass> {
  const pool = new DecodePool(options.decodeThreads ?? Math.max(1, os.availableParallelism()));
  const source = new ImageFolderSource({
    samples: data.samples,
    classNames: data.classes,
    spec: studyTransforms(config.imageSize, config.color).val,
    batchSize: config.batchSize,
    shuffle: false,
    pool,
    onSkip: (s) => options.onWarning?.(`skipped ${s.file}: ${s.reason}`),
  });
  const parts: Float32Array[] = [];
  const labels: number[] = [];
  const acc = new Map<string, MomentAccumulator>();
  let dim = 0;
  // The moments over a sample of about MOMENT_IMAGES images: every stride-th batch, spread over
  // the (class-ordered) images so that every part of the dataset is seen.
  const batches = Math.ceil(data.samples.length / config.batchSize);
  const stride = Math.max(1, Math.floor(batches / Math.ceil(MOMENT_IMAGES / config.batchSize)));
  let index = 0;
  try {
    for await (const batch of source.batches(0, config.seed)) {
      const seen: BnInputMoments[] = [];
      const observe = index++ % stride === 0 ? { bnInputs: seen } : {};
      const f = tf.tidy(() =>
        network.runStages(tf.tensor(batch.x, [...batch.shape]), 0, stage, { training: false, ...observe }),
      );
      dim = f.shape.slice(1).reduce((a, b) => a * b, 1);
      parts.push((await f.data()) as Float32Array);
      f.dispose();
      for (const m of seen) {
        const [mean, variance] = [(await m.mean.data()) as Float32Array, (await m.variance.data()) as Float32Array];
        m.mean.dispose();
        m.variance.dispose();
        if (!acc.has(m.name)) acc.set(m.name, new MomentAccumulator(mean.length));
        acc.get(m.name)!.add(mean, variance, m.count);
      }
      labels.push(...batch.labels);
      options.onProgress?.(labels.length, source.size);
    }
  } finally {
    await pool.close();
  }
  const features = new Float32Array(labels.length * dim);
  parts.reduce((o, p) => (features.set(p, o), o + p.length), 0);
  const moments = [...acc].map(([name, a]) => ({ name, ...a.result() }));
  return { view: { features, labels: Int32Array.from(labels), dim }, moments };
}

/** Nearest centroid and k-NN on a stratified held-out part of the training features. */
function scoreFeatures(config: AdviseConfig, view: FeatureView, classes: number): DatasetAdvice['frozen'] {
  const split = holdOut(view.labels, classes, config.holdOutFraction, config.seed);
  const nearestCentroid = nearestCentroidAccuracy(view.features, view.dim, view.labels, classes, split);
  const knn = knnAccuracy(view.features, view.dim, view.labels, classes, split, config.k);
  return {
    fitImages: split.fit.length,
    heldOutImages: split.test.length,
    nearestCentroid,
    knn,
    k: config.k,
    accuracy: Math.max(nearestCentroid, knn),
    chance: 1 / classes,
  };
}

/** The data's BatchNorm input moments against the running statistics the weights came with. */
async function domainShift(network: Network, pass: FrozenPass): Promise<DatasetAdvice['domain']> {
  const names = pass.moments.flatMap((m) => [`${m.name}.running_mean`, `${m.name}.running_var`]);
  const values = await readVariables(network, names);
  const { shift, layers } = batchNormShift(
    pass.moments.map((m, i) => ({
      name: m.name,
      targetMean: m.mean,
      targetVar: m.variance,
      sourceMean: values[2 * i]!,
      sourceVar: values[2 * i + 1]!,
    })),
  );
  return { shift, level: domainLevelOfShift(shift), layers };
}
