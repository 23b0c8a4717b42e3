import { createHash } from 'node:crypto';
import * as tf from '@tensorflow/tfjs-core';
import { disposeBnStats } from '../backends/fused.js';
import type { BnBatchStats } from '../models/layers.js';
import { paramsOfStage } from '../models/model.js';
import type { BatchSource } from './data.js';
import type { Network } from './network.js';

/** Names of the BatchNorm running statistics (mean and variance) of stages [from, to). */
export function batchNormStatNames(network: Network, from: number, to: number): string[] {
  const model = network.model;
  return model.stages
    .slice(from, to)
    .flatMap((stage) => paramsOfStage(model, stage))
    .filter((p) => p.kind === 'bn_mean' || p.kind === 'bn_var')
    .map((p) => p.name);
}

/** Host copies of the named variables, in order. */
export async function readVariables(network: Network, names: readonly string[]): Promise<Float32Array[]> {
  return Promise.all(
    names.map(async (n) => Float32Array.from((await network.variables.get(n)!.data()) as Float32Array)),
  );
}

/** Overwrites the named variables with host values (as read by readVariables). */
export function assignVariables(network: Network, names: readonly string[], values: readonly Float32Array[]): void {
  names.forEach((n, i) => {
    const v = network.variables.get(n)!;
    tf.tidy(() => v.assign(tf.tensor(values[i]!, v.shape)));
  });
}

/**
 * SHA-256 of the running statistics of stages [0, before): what frozen features computed in
 * inference mode depend on besides the weights (the feature cache's key includes it).
 */
export async function batchNormStatsHash(network: Network, before: number): Promise<string> {
  const names = batchNormStatNames(network, 0, before);
  const h = createHash('sha256');
  const values = await readVariables(network, names);
  names.forEach((n, i) => {
    const v = values[i]!;
    h.update(n).update(Buffer.from(v.buffer, v.byteOffset, v.byteLength));
  });
  return h.digest('hex');
}

export interface AdaptBatchNormOptions {
  readonly seed: number;
  readonly onBatch?: (done: number, total: number) => void;
  readonly signal?: AbortSignal;
}

/**
 * Adapts the BatchNorm running statistics of stages [0, before) to `source` (AdaBN): one pass in
 * training mode without gradients, each batch normalised with its own statistics as the study's
 * freeze does, and the running statistics set to the cumulative average of the batch statistics
 * (mean, unbiased variance), which is torch's BatchNorm with `momentum=None` after a reset. The
 * source should shuffle: class-sorted batches would average within-class variances.
 * Resolves to the number of batches seen.
 */
export async function adaptBatchNorm(
  network: Network,
  source: BatchSource,
  before: number,
  options: AdaptBatchNormOptions,
): Promise<number> {
  let batches = 0;
  let done = 0;
  for await (const batch of source.batches(0, options.seed)) {
    if (options.signal?.aborted) throw options.signal.reason ?? new Error('aborted');
    const stats: BnBatchStats[] = [];
    tf.tidy(() => {
      network.runStages(tf.tensor(batch.x, [...batch.shape]), 0, before, { training: true, bnStats: stats });
    });
    // Cumulative average: the k-th batch (from 0) enters with weight 1/(k+1); the first replaces
    // the source's statistics entirely.
    network.updateBatchNormStats(stats, 1 / (batches + 1));
    for (const s of stats) disposeBnStats(s.stats);
    batches++;
    done += batch.labels.length;
    options.onBatch?.(done, source.size);
  }
  return batches;
}
