import * as tf from '@tensorflow/tfjs-core';
import { tensorsInHostMemory } from '../backends/shared.js';
import { broadcastFromRank0, ringAllReduceSum, type RingTransport } from './collective.js';
import type { Network } from './network.js';

/**
 * How the replicas of a training run agree, injected into the one training loop (as Ray Train's
 * prepare_model leaves the user's loop as it is): `localSync` for a single process, whose every
 * operation is a no-op, and `RingSync` for a data-parallel group over a RingTransport. The loop
 * calls the same operations in the same places whatever the number of ranks.
 */
export interface GradientSync {
  /** The replica that writes files (checkpoints, best weights): rank 0, or the only one. */
  readonly writesFiles: boolean;
  /** Every replica takes the first one's values of these variables (after any resume). */
  broadcast(variables: readonly tf.Variable[], tag: string): Promise<void>;
  /**
   * The gradients to apply and the outcome to account: the replicas' mean gradients and their
   * summed outcomes. Takes over `step.grads` (the result's are the caller's to dispose).
   */
  average(step: LocalStep, params: ReadonlyMap<string, tf.Variable>, tag: string): Promise<LocalStep>;
  /** Replaces the named variables by their mean over the replicas (BatchNorm statistics). */
  averageVariables(network: Network, names: readonly string[], tag: string): Promise<void>;
  /** The whole val set's sums, from every replica's sums over its shard. */
  sumEvaluation(sums: EvalSums, tag: string): Promise<EvalSums>;
}

/** A step's loss summed over its images, how many it classified right, and how many images. */
export interface CountedOutcome {
  readonly lossSum: number;
  readonly correct: number;
  readonly n: number;
}

/** One step's gradients on this replica, and how to read its outcome back (later, on a GPU). */
export interface LocalStep {
  readonly grads: Map<string, tf.Tensor>;
  read(): Promise<CountedOutcome>;
}

/** An evaluation's sums; predictions and labels per image, in the source's order. */
export interface EvalSums {
  readonly confusion: number[][];
  readonly lossSum: number;
  readonly count: number;
  readonly predictions: ArrayLike<number>;
  readonly labels: ArrayLike<number>;
}

/** A data-parallel group as the trainer is given it (TrainerOptions.distributed). */
export interface RingGroup {
  readonly transport: RingTransport;
  readonly deadlineMs: number;
}

/** One process: nothing to agree on. */
export const localSync: GradientSync = {
  writesFiles: true,
  broadcast: async () => undefined,
  average: async (step) => step,
  averageVariables: async () => undefined,
  sumEvaluation: async (sums) => sums,
};

/** The sync for a trainer's options: the ring when it is one rank of a group, else local. */
export function gradientSync(group: RingGroup | undefined): GradientSync {
  return group ? new RingSync(group) : localSync;
}

/**
 * A data-parallel group: gradients (with the step's loss, accuracy and image count in the same
 * message) are summed over the ring and divided by the world size; rank 0 alone writes files.
 */
export class RingSync implements GradientSync {
  readonly writesFiles: boolean;

  constructor(private readonly group: RingGroup) {
    this.writesFiles = group.transport.rank === 0;
  }

  async broadcast(variables: readonly tf.Variable[], tag: string): Promise<void> {
    const flat = await readFlat(variables);
    await broadcastFromRank0(this.group.transport, flat, tag, this.group.deadlineMs);
    assignSegments(variables, flat, 1);
  }

  async average(step: LocalStep, params: ReadonlyMap<string, tf.Variable>, tag: string): Promise<LocalStep> {
    const local = await step.read();
    const names = [...params.keys()];
    const sizes = names.map((n) => params.get(n)!.size);
    const total = sizes.reduce((a, b) => a + b, 0);
    // A parameter without a gradient (unused in this forward) contributes zeros.
    const flat = await readFlat(
      names.map((n, i) => step.grads.get(n) ?? sizes[i]!),
      3,
    );
    for (const g of step.grads.values()) g.dispose();
    flat[total] = local.lossSum;
    flat[total + 1] = local.correct;
    flat[total + 2] = local.n;
    await ringAllReduceSum(this.group.transport, flat, `grad/${tag}`, this.group.deadlineMs);
    const k = this.group.transport.worldSize;
    const grads = new Map<string, tf.Tensor>();
    segmentsOf(flat, sizes).forEach((part, i) => {
      for (let j = 0; j < part.length; j++) part[j]! /= k;
      grads.set(names[i]!, tf.tensor(part, params.get(names[i]!)!.shape));
    });
    const outcome = { lossSum: flat[total]!, correct: flat[total + 1]!, n: flat[total + 2]! };
    return { grads, read: () => Promise.resolve(outcome) };
  }

  averageVariables(network: Network, names: readonly string[], tag: string): Promise<void> {
    return averageOverRing(network, names, this.group, tag);
  }

  async sumEvaluation(sums: EvalSums, tag: string): Promise<EvalSums> {
    const { confusion } = sums;
    const k = confusion.length;
    // Each rank evaluated its shard of the val set: sum the confusion matrices and losses.
    const flat = Float32Array.from([...confusion.flat(), sums.lossSum, sums.count]);
    await ringAllReduceSum(this.group.transport, flat, `val/${tag}`, this.group.deadlineMs);
    confusion.forEach((row, i) => row.forEach((_, j) => (row[j] = flat[i * k + j]!)));
    const count = flat[k * k + 1]!;
    const [predictions, labels] = await gatherShards(
      this.group,
      Math.round(count),
      [sums.predictions, sums.labels],
      `valpred/${tag}`,
    );
    return { confusion, lossSum: flat[k * k]!, count, predictions: predictions!, labels: labels! };
  }
}

/**
 * Replaces the named variables by their mean over the ranks of a data-parallel group (BatchNorm
 * statistics, which each rank estimates on its own shard).
 */
async function averageOverRing(network: Network, names: readonly string[], group: RingGroup, tag: string) {
  if (names.length === 0) return;
  const vars = names.map((n) => network.variables.get(n)!);
  const flat = await readFlat(vars);
  await ringAllReduceSum(group.transport, flat, tag, group.deadlineMs);
  assignSegments(vars, flat, group.transport.worldSize);
}

/** Assigns consecutive segments of `flat`, divided by `divisor`, to the variables. */
function assignSegments(vars: readonly tf.Variable[], flat: Float32Array, divisor: number): void {
  segmentsOf(
    flat,
    vars.map((v) => v.size),
  ).forEach((part, i) => {
    const v = vars[i]!;
    tf.tidy(() => v.assign(tf.tensor(divisor === 1 ? part : part.map((x) => x / divisor), v.shape)));
  });
}

/**
 * Puts the ranks' shards of per-image values back into val order: rank r evaluated images r, r + k,
 * r + 2k, ... (distributedShard without padding), so its j-th value belongs at r + j k. One sum over
 * the ring (values shifted by 1 so that 0 means "not mine"; float32 holds integers exactly to 2^24).
 */
async function gatherShards(
  group: RingGroup,
  total: number,
  parts: readonly ArrayLike<number>[],
  tag: string,
): Promise<Int32Array[]> {
  const { rank, worldSize } = group.transport;
  const flat = new Float32Array(total * parts.length);
  parts.forEach((values, p) => {
    for (let j = 0; j < values.length; j++) {
      const at = rank + j * worldSize;
      if (at < total) flat[p * total + at] = values[j]! + 1;
    }
  });
  await ringAllReduceSum(group.transport, flat, tag, group.deadlineMs);
  return parts.map((_, p) => Int32Array.from(flat.subarray(p * total, (p + 1) * total), (v) => v - 1));
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
