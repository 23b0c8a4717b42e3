/**
 * Tolerances for tests that compare two float32 computations of the same mathematics (2 ranks and 1
 * rank, micro-batches and one batch): neither is a float64 reference (TF.js computes in float32), so
 * the tolerance is derived from float32's own error on that computation, measured by a "rounding
 * twin": the same training with the images of each batch (or micro-batch) in reverse order. That is
 * the same mathematics (every per-batch reduction is a sum, whose order is all that changes) rounded
 * differently, which is exactly what changes between 1 rank and k ranks. How far the twin lands
 * from the original, propagated through the same steps, is float32's error on this computation;
 * the compared run must land within TOLERANCE_FACTOR of it (the factor and floor the float64 parity
 * tests use, test/helpers/torch-ref.ts). The single-rank run itself is checked against torch's
 * float64 training in parity.test.ts.
 */
import type { Batch, BatchSource } from '@ferry/core';
import { ROUNDING_FLOOR, TOLERANCE_FACTOR } from './torch-ref.js';

/** `source` with the items of every consecutive group of `group` (default: the batch) reversed. */
export function reversedWithinBatches(source: BatchSource, group?: number): BatchSource {
  return {
    size: source.size,
    batchSize: source.batchSize,
    numClasses: source.numClasses,
    classNames: source.classNames,
    async *batches(epoch: number, seed: number): AsyncIterable<Batch> {
      for await (const b of source.batches(epoch, seed)) yield reverseGroups(b, group ?? b.labels.length);
    },
  };
}

function reverseGroups(b: Batch, group: number): Batch {
  const n = b.labels.length;
  const per = b.x.length / n;
  const x = new Float32Array(b.x.length);
  const labels = new Int32Array(n);
  for (let start = 0; start < n; start += group) {
    const end = Math.min(n, start + group);
    for (let i = start; i < end; i++) {
      const from = end - 1 - (i - start);
      x.set(b.x.subarray(from * per, (from + 1) * per), i * per);
      labels[i] = b.labels[from]!;
    }
  }
  return { x, shape: b.shape, labels };
}

/** The largest difference float32 rounding explains, given the twin's difference. */
export function roundingTolerance(twinDifference: number): number {
  return TOLERANCE_FACTOR * Math.max(twinDifference, ROUNDING_FLOOR);
}
