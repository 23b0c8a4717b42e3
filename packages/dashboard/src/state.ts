import {
  adviceRowKey,
  rowAdviceOfWire,
  resultsTable,
  type CellOutcome,
  type ResultsTable,
  type RowAdvice,
} from '@ferry/common';
import type { CellSpec, FerryEvent, ProcessEvent } from '@ferry/protocol';

/** One epoch of a cell as the dashboard keeps it. */
export interface EpochPoint {
  readonly epoch: number;
  readonly trainLoss: number;
  readonly trainAccuracy: number;
  readonly valLoss: number;
  readonly valAccuracy: number;
  readonly imagesPerSec: number;
}

export interface CellView {
  cellId: string;
  sweepId: string;
  spec: CellSpec | null;
  state: string;
  attempts: number;
  worker: string;
  error: string;
  epochs: EpochPoint[];
  progress: {
    epoch: number;
    step: number;
    stepsPerEpoch: number;
    epochs: number;
    loss: number;
    imagesPerSec: number;
    etaMs: number;
    time: string;
  } | null;
  /** Step-level training loss as it was published (x: epochs elapsed, fractional), at most STEP_POINTS. */
  steps: { x: number; loss: number }[];
  bestValAccuracy: number;
  bestEpoch: number;
  wallMs: number;
  imagesPerSec: number;
  classes: string[];
  confusion: number[][];
  perClassAccuracy: number[];
  /** The best epoch's per-image predictions, for the paired tests (empty when not kept). */
  predictions: { predicted: number[]; labels: number[]; valSetHash: string } | null;
  updated: string;
}

export interface SweepView {
  sweepId: string;
  name: string;
  createdAt: string;
  declaredCells: number;
  cells: Map<string, CellView>;
  /** Children of `ferry run` that crashed, restarted or were given up on (newest last, at most 200). */
  processes: ProcessView[];
  /** The advisor's predictions for the sweep's rows (a heuristic), by row key; the table shows them beside the verdicts. */
  advice: Map<string, RowAdvice>;
}

/** A `ferry run` child's crash, restart or crash loop (the event as published), and when. */
export type ProcessView = ProcessEvent & { readonly time: string };

export interface WorkerView {
  workerId: string;
  name: string;
  backend: string;
  device: string;
  state: string;
  imagesPerSec: number;
  cellId: string;
  sweepId: string;
  lastSeen: string;
  /** The host it runs on, and its Slurm job (`123_4`; empty outside Slurm). */
  host: string;
  slurmJob: string;
}

/** A batch job of the workers (ferry run --slurm), as its last event left it. */
export interface JobView {
  readonly jobId: string;
  readonly state: string;
  readonly reason: string;
  readonly node: string;
  readonly time: string;
}

/** Jobs kept (the newest): a long run on a busy cluster submits many. */
const MAX_JOBS = 200;

/** What an event changed (the live pushes name it). */
export interface Change {
  readonly sweepId: string;
  readonly cellId?: string;
  readonly workerId?: string;
}

/** Everything the dashboard shows, rebuilt from the event history (replay) and kept live. */
export class DashboardState {
  readonly sweeps = new Map<string, SweepView>();
  readonly workers = new Map<string, WorkerView>();
  readonly jobs = new Map<string, JobView>();
  events = 0;

  private sweep(id: string): SweepView {
    let s = this.sweeps.get(id);
    if (!s) {
      s = {
        sweepId: id,
        name: id,
        createdAt: '',
        declaredCells: 0,
        cells: new Map(),
        processes: [],
        advice: new Map(),
      };
      this.sweeps.set(id, s);
    }
    return s;
  }

  private cell(sweepId: string, cellId: string): CellView {
    const s = this.sweep(sweepId);
    let c = s.cells.get(cellId);
    if (!c) {
      c = {
        cellId,
        sweepId,
        spec: null,
        state: 'pending',
        attempts: 0,
        worker: '',
        error: '',
        epochs: [],
        progress: null,
        steps: [],
        bestValAccuracy: 0,
        bestEpoch: -1,
        wallMs: 0,
        imagesPerSec: 0,
        classes: [],
        confusion: [],
        perClassAccuracy: [],
        predictions: null,
        updated: '',
      };
      s.cells.set(cellId, c);
    }
    return c;
  }

  /** Applies one event; returns what changed (for live pushes), or null for an ignored event. */
  apply(e: FerryEvent): Change | null {
    this.events++;
    if (e.sweep) return this.applySweep(e.sweepId, e.sweep);
    if (e.cell) return this.applyCell(e, e.cell);
    if (e.step) return this.applyStep(e, e.step);
    if (e.epoch) return this.applyEpoch(e.sweepId, e.epoch);
    if (e.process) return this.applyProcess(e, e.process);
    if (e.worker) return this.applyWorker(e, e.worker);
    if (e.advice) return this.applyAdvice(e.sweepId, e.advice);
    if (e.job) return this.applyJob(e, e.job);
    return null;
  }

  private applyJob(e: FerryEvent, j: NonNullable<FerryEvent['job']>): Change {
    this.jobs.delete(j.jobId); // re-inserted last: the map keeps the newest order
    this.jobs.set(j.jobId, { jobId: j.jobId, state: j.state, reason: j.reason, node: j.node, time: e.time });
    if (this.jobs.size > MAX_JOBS) this.jobs.delete(this.jobs.keys().next().value!);
    return { sweepId: e.sweepId, workerId: `job:${j.jobId}` };
  }

  private applyAdvice(sweepId: string, x: NonNullable<FerryEvent['advice']>): Change | null {
    const a = rowAdviceOfWire(x);
    if (!a) return null;
    this.sweep(sweepId).advice.set(adviceRowKey(a), a);
    return { sweepId };
  }

  private applySweep(sweepId: string, x: NonNullable<FerryEvent['sweep']>): Change {
    const s = this.sweep(sweepId);
    s.name = x.name;
    s.createdAt = x.createdAt;
    s.declaredCells = x.cells;
    return { sweepId };
  }

  private applyCell(e: FerryEvent, x: NonNullable<FerryEvent['cell']>): Change {
    const c = this.cell(e.sweepId, x.cellId);
    c.spec = x.spec ?? c.spec;
    c.state = x.state;
    c.attempts = x.attempts;
    c.worker = x.worker;
    c.error = x.error;
    c.updated = e.time;
    if (x.state === 'done') {
      c.bestValAccuracy = x.bestValAccuracy;
      c.bestEpoch = x.bestEpoch;
      c.wallMs = x.wallMs;
      c.imagesPerSec = x.imagesPerSec;
      c.classes = x.classes;
      c.confusion = x.confusion.map((r) => r.counts);
      c.perClassAccuracy = x.perClassAccuracy;
      c.predictions =
        x.valLabels.length > 0 && x.valSetHash
          ? { predicted: x.valPredictions, labels: x.valLabels, valSetHash: x.valSetHash }
          : null;
      c.progress = null;
    }
    // A new attempt resumes from a checkpoint: its epochs replace the old attempt's from there.
    return { sweepId: e.sweepId, cellId: c.cellId };
  }

  private applyStep(e: FerryEvent, s: NonNullable<FerryEvent['step']>): Change {
    const c = this.cell(e.sweepId, s.cellId);
    c.progress = {
      epoch: s.epoch,
      step: s.step,
      stepsPerEpoch: s.stepsPerEpoch,
      epochs: s.epochs,
      loss: s.loss,
      imagesPerSec: s.imagesPerSec,
      etaMs: s.etaMs,
      time: e.time,
    };
    if (s.stepsPerEpoch > 0 && Number.isFinite(s.loss)) {
      const x = s.epoch + s.step / s.stepsPerEpoch;
      // A resumed attempt goes back in time: drop what it will publish again.
      c.steps = c.steps.filter((p) => p.x < x);
      c.steps.push({ x, loss: s.loss });
      if (c.steps.length > 2 * STEP_POINTS) c.steps = downsample(c.steps, STEP_POINTS);
    }
    c.worker = s.worker;
    if (c.state === 'pending') c.state = 'running';
    return { sweepId: e.sweepId, cellId: c.cellId };
  }

  private applyEpoch(sweepId: string, m: NonNullable<FerryEvent['epoch']>): Change {
    const c = this.cell(sweepId, m.cellId);
    c.epochs = c.epochs.filter((p) => p.epoch < m.epoch);
    c.epochs.push({
      epoch: m.epoch,
      trainLoss: m.trainLoss,
      trainAccuracy: m.trainAccuracy,
      valLoss: m.valLoss,
      valAccuracy: m.valAccuracy,
      imagesPerSec: m.imagesPerSec,
    });
    if (c.state !== 'done') {
      c.confusion = m.confusion.map((r) => r.counts);
      c.perClassAccuracy = m.perClassAccuracy;
    }
    return { sweepId, cellId: c.cellId };
  }

  private applyProcess(e: FerryEvent, p: ProcessEvent): Change {
    const s = this.sweep(e.sweepId);
    s.processes.push({ ...p, time: e.time });
    if (s.processes.length > 200) s.processes.shift();
    return { sweepId: e.sweepId };
  }

  private applyWorker(e: FerryEvent, w: NonNullable<FerryEvent['worker']>): Change {
    const prev = this.workers.get(w.workerId);
    this.workers.set(w.workerId, {
      workerId: w.workerId,
      name: w.name || prev?.name || w.workerId,
      backend: w.backend || prev?.backend || '',
      device: w.device || prev?.device || '',
      state: w.state,
      imagesPerSec: w.imagesPerSec || (w.state === 'alive' ? (prev?.imagesPerSec ?? 0) : 0),
      cellId: w.cellId,
      sweepId: e.sweepId,
      lastSeen: e.time,
      host: w.host || prev?.host || '',
      slurmJob: w.slurmJob || prev?.slurmJob || '',
    });
    return { sweepId: e.sweepId, workerId: w.workerId };
  }

  /** The comparison table of a sweep, from its done cells (same function as `ferry sweep results`). */
  table(sweepId: string): ResultsTable {
    const s = this.sweeps.get(sweepId);
    const outcomes: CellOutcome[] = [];
    for (const c of s?.cells.values() ?? []) {
      if (c.state !== 'done' || !c.spec) continue;
      outcomes.push({
        spec: c.spec,
        settings: { ...c.spec },
        cellId: c.cellId,
        bestValAccuracy: c.bestValAccuracy,
        bestEpoch: c.bestEpoch,
        wallMs: c.wallMs,
        imagesPerSec: c.imagesPerSec,
        ...(c.predictions ? { predictions: c.predictions } : {}),
      });
    }
    return resultsTable(outcomes, { advice: [...(s?.advice.values() ?? [])] });
  }
}

/** Step-level loss points kept per cell (the oldest are thinned evenly beyond twice this). */
const STEP_POINTS = 500;

/** At most `max` points, evenly spaced, always keeping the last (curves of long runs stay light). */
export function downsample<T>(points: readonly T[], max: number): T[] {
  if (points.length <= max) return [...points];
  const out: T[] = [];
  const step = (points.length - 1) / (max - 1);
  for (let i = 0; i < max; i++) out.push(points[Math.round(i * step)]!);
  return out;
}
