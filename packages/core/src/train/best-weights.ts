import type * as tf from '@tensorflow/tfjs-core';
import type { StateDict } from '../weights/host-tensor.js';
import { resolveWeights } from '../weights/load.js';
import type { CheckpointMeta } from './checkpoint.js';
import type { Network } from './network.js';

/**
 * The best validation accuracy so far, the epoch that reached it, its per-image predictions, and
 * its weights: a device-side copy of what training can change (cheap), or, right after a resume,
 * the `best.safetensors` file's tensors until a better epoch comes.
 */
export class BestWeights {
  accuracy = -1;
  epoch = -1;
  predictions: readonly number[] = [];
  valLabels: readonly number[] = [];
  private snapshot: Map<string, tf.Tensor> | undefined;
  private fromFile: StateDict | undefined;

  /** What a checkpoint recorded about the best epoch, and the best weights file if there is one. */
  resume(meta: CheckpointMeta, fromFile: StateDict | undefined): void {
    this.accuracy = meta.bestValAccuracy;
    this.epoch = meta.bestEpoch;
    this.predictions = meta.bestPredictions ?? [];
    this.valLabels = meta.valLabels ?? [];
    this.fromFile = fromFile;
  }

  /**
   * Keeps this epoch when it beats the best so far; torch's script keeps the first epoch reaching
   * the best accuracy (strictly greater). Returns whether it did.
   */
  offer(
    epoch: number,
    accuracy: number,
    val: { readonly predictions: ArrayLike<number>; readonly labels: ArrayLike<number> },
    network: Network,
    changing: readonly string[],
  ): boolean {
    if (!(accuracy > this.accuracy)) return false;
    this.accuracy = accuracy;
    this.epoch = epoch;
    this.predictions = Array.from(val.predictions);
    this.valLabels = Array.from(val.labels);
    this.dispose();
    this.snapshot = network.snapshot(changing);
    this.fromFile = undefined;
    return true;
  }

  /** As the study does: the model ends with its best-val weights. */
  restoreInto(network: Network): void {
    if (this.snapshot) {
      network.restore(this.snapshot);
      this.dispose();
    } else if (this.fromFile) network.assign(resolveWeights(network.model, this.fromFile, 'best weights').values);
  }

  private dispose(): void {
    for (const t of this.snapshot?.values() ?? []) t.dispose();
    this.snapshot = undefined;
  }
}
