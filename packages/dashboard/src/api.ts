import { Type, type Static } from '@fastify/type-provider-typebox';
import { sourceCellOf, type ResultsTable } from '@ferry/common';
import type { CellSpec } from '@ferry/protocol';
import type { CellView, EpochPoint, JobView, ProcessView, WorkerView } from './state.js';

/**
 * The JSON the dashboard's API answers, as the routes' reply schemas (TypeBox): each type here is
 * its schema's (the browser code's JSDoc uses these types too). Parts that other modules define
 * (the results table, a cell's spec, the workers, jobs and processes) are passed through whole:
 * `passThrough` says their type and lets the serializer write every property they have.
 */
const passThrough = <T>() => Type.Unsafe<T>(Type.Object({}, { additionalProperties: true }));
const passThroughList = <T>() => Type.Unsafe<T[]>(Type.Array(Type.Object({}, { additionalProperties: true })));

/** `{ error }`: what every refusal (400, 401, 404) answers. */
export const ERROR_REPLY = Type.Object({ error: Type.String() });

/** `/healthz`. */
export const HEALTH = Type.Object({ ok: Type.Boolean(), events: Type.Number() });

/** `/api/sweeps`: a sweep with its counts. */
export const SWEEP_LIST_ITEM = Type.Object({
  sweepId: Type.String(),
  name: Type.String(),
  createdAt: Type.String(),
  cells: Type.Integer(),
  done: Type.Integer(),
  running: Type.Integer(),
  failed: Type.Integer(),
  /** Cells of a later stage whose source failed (they never ran). */
  blocked: Type.Integer(),
});
export type SweepListItem = Static<typeof SWEEP_LIST_ITEM>;
export const SWEEP_LIST = Type.Array(SWEEP_LIST_ITEM);

/** A cell's row of the sweep page. */
export const CELL_SUMMARY = Type.Object({
  cellId: Type.String(),
  dataset: Type.String(),
  color: Type.String(),
  strategy: Type.String(),
  model: Type.String(),
  /** Its starting weights as the row shows them (weightsLabel). */
  weights: Type.String(),
  seed: Type.Integer(),
  state: Type.String(),
  attempts: Type.Integer(),
  worker: Type.String(),
  error: Type.String(),
  /** 0 to 1. */
  progress: Type.Number(),
  /** The epoch in progress (from 1), or the epochs done. */
  epoch: Type.Integer(),
  epochs: Type.Integer(),
  etaMs: Type.Number(),
  imagesPerSec: Type.Number(),
  bestValAccuracy: Type.Number(),
});
export type CellSummary = Static<typeof CELL_SUMMARY>;

/**
 * A cell's starting weights as its row shows them: `pretrained`, `none` (random initialisation),
 * `cell <id8>` for a later stage's source, a weights file by its name.
 */
export function weightsLabel(weights: string): string {
  const source = sourceCellOf(weights);
  if (source !== null) return `cell ${source.slice(0, 8)}`;
  return weights.split(/[\\/]/).at(-1) ?? weights;
}

/** A cell's row, from what the state holds of it (typed by the row's reply schema). */
export function cellSummary(c: CellView): CellSummary {
  const p = c.progress;
  const total = p ? p.epochs * p.stepsPerEpoch : 0;
  const done = c.state === 'done' ? 1 : p && total > 0 ? (p.epoch * p.stepsPerEpoch + p.step) / total : 0;
  return {
    cellId: c.cellId,
    dataset: c.spec?.dataset ?? '',
    color: c.spec?.color ?? '',
    strategy: c.spec?.strategy ?? '',
    model: c.spec?.model ?? '',
    weights: weightsLabel(c.spec?.weights ?? ''),
    seed: c.spec?.seed ?? 0,
    state: c.state,
    attempts: c.attempts,
    worker: c.worker,
    error: c.error,
    progress: Math.max(0, Math.min(1, done)),
    epoch: p ? p.epoch + 1 : c.epochs.length,
    epochs: c.spec?.epochs ?? p?.epochs ?? 0,
    etaMs: c.state === 'running' && p ? p.etaMs : 0,
    imagesPerSec: c.state === 'done' ? c.imagesPerSec : (p?.imagesPerSec ?? 0),
    bestValAccuracy: c.state === 'done' ? c.bestValAccuracy : Math.max(0, ...c.epochs.map((x) => x.valAccuracy)),
  };
}

/** `/api/sweeps/:id`. */
export const SWEEP_DETAIL = Type.Object({
  sweepId: Type.String(),
  name: Type.String(),
  createdAt: Type.String(),
  cells: Type.Array(CELL_SUMMARY),
  workers: passThroughList<WorkerView>(),
  /** The workers' Slurm jobs (ferry run --slurm), newest last. */
  jobs: passThroughList<JobView>(),
  processes: passThroughList<ProcessView>(),
  table: passThrough<ResultsTable>(),
});
export type SweepDetail = Static<typeof SWEEP_DETAIL>;

/** `/api/sweeps/:id/table` as JSON. */
export const TABLE = passThrough<ResultsTable>();

/** `/api/cells/:id`: a cell with its curves, step losses and confusion matrix. */
export const CELL_DETAIL = Type.Object({
  ...CELL_SUMMARY.properties,
  spec: Type.Union([passThrough<CellSpec>(), Type.Null()]),
  curves: passThroughList<EpochPoint>(),
  steps: Type.Array(Type.Object({ x: Type.Number(), loss: Type.Number() })),
  classes: Type.Array(Type.String()),
  confusion: Type.Array(Type.Array(Type.Number())),
  perClassAccuracy: Type.Array(Type.Number()),
  bestEpoch: Type.Integer(),
});
export type CellDetail = Static<typeof CELL_DETAIL>;
