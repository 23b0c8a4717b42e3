import type { CellResult, CellRunOptions, EpochMetrics as EngineMetrics } from '@ferry/core';
import { FerryEvent, type Assignment } from '@ferry/protocol';
import { wireMetrics } from './wire.js';

/** An attempt this worker holds: its cell, its progress, and how to stop it. */
export interface AttemptRun {
  readonly cellId: string;
  readonly sweepId: string;
  readonly attemptId: string;
  /** Epochs done (the coordinator's checkpoint, then each epoch trained here). */
  epoch: number;
  imagesPerSec: number;
  readonly abort: AbortController;
  /** Why it was aborted, if it was. */
  why: 'shutdown' | 'cancelled' | null;
}

/** What the engine reports while it runs a cell. */
export type CellProgress = Parameters<NonNullable<CellRunOptions['onProgress']>>[0];

/** How the engine's run of an attempt ended. */
export type TrainOutcome =
  | { readonly ok: true; readonly result: CellResult; readonly dir: string }
  | { readonly ok: false; readonly error: unknown };

/**
 * An attempt's training progress as the worker passes it on: step events (throttled), epoch
 * events and reports, checkpoint uploads one after another. Only rank 0 speaks for a
 * data-parallel group; every rank keeps its epoch count for heartbeats.
 */
export interface ProgressSink {
  readonly name: string;
  readonly stepEventMs: number;
  publish(kind: 'step' | 'epoch', event: FerryEvent): void;
  reportEpoch(metrics: EngineMetrics): void;
  upload(file: string, epochsDone: number): Promise<void>;
  log(line: string): void;
}

export class AttemptProgress {
  uploads: Promise<void> = Promise.resolve();
  private lastStepEvent = 0;

  constructor(
    private readonly worker: ProgressSink,
    private readonly a: Assignment,
    private readonly run: AttemptRun,
  ) {}

  on(p: CellProgress): void {
    if (p.type === 'epoch') this.run.epoch = p.metrics.epoch + 1;
    if (p.type === 'epoch' && p.allReduce && p.allReduce.steps > 0) {
      // Every rank says where its steps' time went: the all-reduce's share is what data parallelism costs.
      const { steps, computeMs, allReduceMs, bytes } = p.allReduce;
      const share = (100 * allReduceMs) / (computeMs + allReduceMs);
      this.worker.log(
        `cell ${this.a.cellId} epoch ${p.metrics.epoch} (rank ${this.a.rank} of ${this.a.worldSize}): ${steps} steps, compute ${(computeMs / steps).toFixed(0)} ms and gradient all-reduce ${(allReduceMs / steps).toFixed(0)} ms a step (${share.toFixed(0)}% of the step, ${(bytes / 1e6).toFixed(1)} MB)`,
      );
    }
    if (this.a.rank !== 0) return;
    if (p.type === 'step') this.step(p);
    else if (p.type === 'epoch') {
      const epoch = { ...wireMetrics(p.metrics), cellId: this.a.cellId, worker: this.worker.name, best: p.best };
      this.worker.publish('epoch', FerryEvent.fromPartial({ sweepId: this.a.sweepId, time: now(), epoch }));
      this.worker.reportEpoch(p.metrics);
    } else if (p.type === 'checkpoint') {
      const epochsDone = p.epoch + 1;
      this.uploads = this.uploads.then(() => this.worker.upload(p.file, epochsDone));
    }
  }

  private step(p: Extract<CellProgress, { type: 'step' }>): void {
    this.run.imagesPerSec = p.imagesPerSec;
    const t = Date.now();
    if (t - this.lastStepEvent < this.worker.stepEventMs && p.step !== p.stepsPerEpoch) return;
    this.lastStepEvent = t;
    const { epoch, step, stepsPerEpoch, loss, imagesPerSec, etaMs } = p;
    const event = { cellId: this.a.cellId, worker: this.worker.name, epoch, step, stepsPerEpoch, loss };
    this.worker.publish(
      'step',
      FerryEvent.fromPartial({
        sweepId: this.a.sweepId,
        time: now(),
        step: { ...event, imagesPerSec, etaMs, epochs: this.a.spec!.epochs },
      }),
    );
  }
}

const now = (): string => new Date().toISOString();
