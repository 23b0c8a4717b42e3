import type { ResultsTable } from '@ferry/common';
import type { CellSpec } from '@ferry/protocol';
import type { EpochPoint, JobView, ProcessView, WorkerView, cellSummary } from './state.js';

/** The JSON the dashboard's API answers (the browser code's JSDoc uses these types too). */

/** `/api/sweeps`: a sweep with its counts. */
export interface SweepListItem {
  readonly sweepId: string;
  readonly name: string;
  readonly createdAt: string;
  readonly cells: number;
  readonly done: number;
  readonly running: number;
  readonly failed: number;
  /** Cells of a later stage whose source failed (they never ran). */
  readonly blocked: number;
}

/** A cell's row of the sweep page. */
export type CellSummary = ReturnType<typeof cellSummary>;

/** `/api/sweeps/:id`. */
export interface SweepDetail {
  readonly sweepId: string;
  readonly name: string;
  readonly createdAt: string;
  readonly cells: readonly CellSummary[];
  readonly workers: readonly WorkerView[];
  /** The workers' Slurm jobs (ferry run --slurm), newest last. */
  readonly jobs: readonly JobView[];
  readonly processes: readonly ProcessView[];
  readonly table: ResultsTable;
}

/** `/api/cells/:id`: a cell with its curves, step losses and confusion matrix. */
export interface CellDetail extends CellSummary {
  readonly spec: CellSpec | null;
  readonly curves: readonly EpochPoint[];
  readonly steps: readonly { readonly x: number; readonly loss: number }[];
  readonly classes: readonly string[];
  readonly confusion: readonly (readonly number[])[];
  readonly perClassAccuracy: readonly number[];
  readonly bestEpoch: number;
}
