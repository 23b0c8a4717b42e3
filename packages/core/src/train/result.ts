/** Metrics of one epoch, as the study's script records them. */
export interface EpochMetrics {
  /** 0-based epoch. */
  readonly epoch: number;
  readonly lr: number;
  readonly trainLoss: number;
  readonly trainAccuracy: number;
  readonly valLoss: number;
  readonly valAccuracy: number;
  /** Row = true class, column = predicted. */
  readonly confusion: readonly (readonly number[])[];
  readonly perClassAccuracy: readonly number[];
  readonly trainMs: number;
  readonly valMs: number;
  /** Time the trainer waited for the data pipeline during this epoch. */
  readonly dataWaitMs: number;
  readonly imagesPerSec: number;
}

export interface TrainResult {
  readonly epochs: readonly EpochMetrics[];
  readonly bestValAccuracy: number;
  /** 0-based epoch whose weights are kept. */
  readonly bestEpoch: number;
  /** The best epoch's confusion matrix (row = true class) and per-class accuracy. */
  readonly confusion: readonly (readonly number[])[];
  readonly perClassAccuracy: readonly number[];
  /**
   * The class predicted for each val image at the best epoch, in the val source's order, and the
   * images' labels: what paired tests compare between cells evaluated on the same images.
   */
  readonly valPredictions: readonly number[];
  readonly valLabels: readonly number[];
  readonly wallMs: number;
  /** Training images per second over all epochs (this process). */
  readonly imagesPerSec: number;
  readonly resumedFromEpoch: number;
}

/**
 * A data-parallel epoch's steps on one rank: the time its replica computed (forward, backward,
 * update) and the time it waited for the gradients' all-reduce (reading them out, the ring, the
 * averaged tensors back). On a CPU backend kernels run when called, so the split is exact; on a
 * GPU the device's queued work shows up in the all-reduce's wait.
 */
export interface AllReduceShare {
  readonly steps: number;
  readonly computeMs: number;
  readonly allReduceMs: number;
  /** Bytes each all-reduce summed (the gradients and the step's counts). */
  readonly bytes: number;
}

/** Progress the trainer reports; the worker publishes these as events. */
export type TrainProgress =
  | {
      readonly type: 'step';
      readonly epoch: number;
      readonly step: number;
      readonly stepsPerEpoch: number;
      readonly loss: number;
      readonly imagesPerSec: number;
      readonly etaMs: number;
    }
  | {
      readonly type: 'epoch';
      readonly metrics: EpochMetrics;
      readonly best: boolean;
      /** A data-parallel rank's epoch: where its steps' time went. */
      readonly allReduce?: AllReduceShare;
    }
  | { readonly type: 'checkpoint'; readonly epoch: number; readonly file: string };
