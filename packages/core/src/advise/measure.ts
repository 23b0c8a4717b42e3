/**
 * The advisor's measurements, pure functions over plain arrays: a stratified held-out part of the
 * training features, two classifiers that need no training (cosine nearest centroid and cosine
 * k-nearest neighbours), and the BatchNorm shift between the data's statistics and the source's.
 */
import { stratifiedSplit } from '../data/folder.js';

/** Indices of a stratified, seeded split of `labels` (per class, `fraction` held out, at least 1). */
export function holdOut(
  labels: ArrayLike<number>,
  classes: number,
  fraction: number,
  seed: number,
): { fit: number[]; test: number[] } {
  const byClass: number[][] = Array.from({ length: classes }, () => []);
  for (let i = 0; i < labels.length; i++) byClass[labels[i]!]!.push(i);
  const split = stratifiedSplit(
    byClass.map((c) => c.length),
    fraction,
    seed,
  );
  const fit: number[] = [];
  const test: number[] = [];
  byClass.forEach((members, c) => {
    const held = new Set(split[c]!);
    members.forEach((index, j) => (held.has(j) ? test : fit).push(index));
  });
  return { fit: fit.sort((a, b) => a - b), test: test.sort((a, b) => a - b) };
}

/** Rows of `features` ([n, dim]) scaled to unit length, in float64 (a zero row stays zero). */
export function unitRows(features: ArrayLike<number>, dim: number): Float64Array {
  const n = features.length / dim;
  const out = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    let norm = 0;
    for (let k = 0; k < dim; k++) norm += features[i * dim + k]! ** 2;
    const inv = norm > 0 ? 1 / Math.sqrt(norm) : 0;
    for (let k = 0; k < dim; k++) out[i * dim + k] = features[i * dim + k]! * inv;
  }
  return out;
}

function dot(a: Float64Array, i: number, b: Float64Array, j: number, dim: number): number {
  let s = 0;
  for (let k = 0; k < dim; k++) s += a[i * dim + k]! * b[j * dim + k]!;
  return s;
}

/**
 * Accuracy on `test` of the cosine nearest-centroid classifier fitted on `fit`: each class's
 * centroid is the mean of its unit-length features; an image goes to the most similar centroid
 * (ties: the lower class). A linear classifier with no training.
 */
export function nearestCentroidAccuracy(
  features: ArrayLike<number>,
  dim: number,
  labels: ArrayLike<number>,
  classes: number,
  split: { readonly fit: readonly number[]; readonly test: readonly number[] },
): number {
  const x = unitRows(features, dim);
  const centroids = new Float64Array(classes * dim);
  for (const i of split.fit) {
    const c = labels[i]!;
    for (let k = 0; k < dim; k++) centroids[c * dim + k]! += x[i * dim + k]!;
  }
  const unit = unitRows(centroids, dim);
  let correct = 0;
  for (const i of split.test) {
    let best = 0;
    let bestSim = -Infinity;
    for (let c = 0; c < classes; c++) {
      const sim = dot(x, i, unit, c, dim);
      if (sim > bestSim) [best, bestSim] = [c, sim];
    }
    if (best === labels[i]) correct++;
  }
  return split.test.length > 0 ? correct / split.test.length : 0;
}

/**
 * Accuracy on `test` of cosine k-nearest neighbours among `fit`: a majority vote of the k most
 * similar (ties between neighbours: the lower index; ties in the vote: the class whose nearest
 * member is most similar).
 */
export function knnAccuracy(
  features: ArrayLike<number>,
  dim: number,
  labels: ArrayLike<number>,
  classes: number,
  split: { readonly fit: readonly number[]; readonly test: readonly number[] },
  k: number,
): number {
  const x = unitRows(features, dim);
  let correct = 0;
  for (const i of split.test) {
    const sims = split.fit.map((j) => ({ j, sim: dot(x, i, x, j, dim) }));
    sims.sort((a, b) => b.sim - a.sim || a.j - b.j);
    const votes = new Array<number>(classes).fill(0);
    const nearest = new Array<number>(classes).fill(-Infinity);
    for (const { j, sim } of sims.slice(0, k)) {
      const c = labels[j]!;
      votes[c]!++;
      nearest[c] = Math.max(nearest[c]!, sim);
    }
    let best = 0;
    for (let c = 1; c < classes; c++)
      if (votes[c]! > votes[best]! || (votes[c] === votes[best] && nearest[c]! > nearest[best]!)) best = c;
    if (best === labels[i]) correct++;
  }
  return split.test.length > 0 ? correct / split.test.length : 0;
}

/** Per-channel statistics of one BatchNorm layer: the data's (target) and the running ones (source). */
export interface BatchNormLayerStats {
  readonly name: string;
  readonly targetMean: ArrayLike<number>;
  readonly targetVar: ArrayLike<number>;
  readonly sourceMean: ArrayLike<number>;
  readonly sourceVar: ArrayLike<number>;
}

/** BatchNorm's epsilon: a channel of (almost) constant activations is compared as BatchNorm sees it. */
const VAR_EPS = 1e-5;

/**
 * Hellinger distance between two 1-D Gaussians: 0 when equal, towards 1 as they stop overlapping.
 * H^2 = 1 - sqrt(2 s1 s2 / (s1^2 + s2^2)) exp(-(m1 - m2)^2 / (4 (s1^2 + s2^2))).
 */
export function gaussianHellinger(m1: number, v1: number, m2: number, v2: number): number {
  const a = v1 + VAR_EPS;
  const b = v2 + VAR_EPS;
  const bc = Math.sqrt((2 * Math.sqrt(a * b)) / (a + b)) * Math.exp(-((m1 - m2) ** 2) / (4 * (a + b)));
  return Math.sqrt(Math.max(0, 1 - bc));
}

/**
 * The BatchNorm shift: per layer, the mean over channels of the Hellinger distance between the
 * Gaussian of the data's activations and the Gaussian of the layer's running statistics; then
 * the mean over layers. 0: the data looks like the source to every layer; 1: nothing overlaps.
 */
export function batchNormShift(layers: readonly BatchNormLayerStats[]): {
  readonly shift: number;
  readonly layers: readonly { readonly name: string; readonly shift: number }[];
} {
  const per = layers.map((l) => {
    let s = 0;
    for (let c = 0; c < l.targetMean.length; c++)
      s += gaussianHellinger(l.targetMean[c]!, l.targetVar[c]!, l.sourceMean[c]!, l.sourceVar[c]!);
    return { name: l.name, shift: l.targetMean.length > 0 ? s / l.targetMean.length : 0 };
  });
  const shift = per.length > 0 ? per.reduce((a, l) => a + l.shift, 0) / per.length : 0;
  return { shift, layers: per };
}

/** Running pooled moments of a layer's input over batches (host float64). */
export class MomentAccumulator {
  private readonly sum: Float64Array;
  private readonly sumSq: Float64Array;
  private count = 0;

  constructor(channels: number) {
    this.sum = new Float64Array(channels);
    this.sumSq = new Float64Array(channels);
  }

  /** Adds one batch's per-channel mean and biased variance over `count` values. */
  add(mean: ArrayLike<number>, variance: ArrayLike<number>, count: number): void {
    for (let c = 0; c < this.sum.length; c++) {
      this.sum[c]! += mean[c]! * count;
      this.sumSq[c]! += (variance[c]! + mean[c]! ** 2) * count;
    }
    this.count += count;
  }

  /** Mean and variance over every value added. */
  result(): { mean: number[]; variance: number[] } {
    const n = Math.max(1, this.count);
    const mean = [...this.sum].map((s) => s / n);
    const variance = [...this.sumSq].map((s, c) => Math.max(0, s / n - mean[c]! ** 2));
    return { mean, variance };
  }
}
