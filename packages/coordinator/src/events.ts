import { parseCellResult } from '@ferry/common';
import { CellEvent, ConfusionRow, EpochEvent, FerryEvent, SUBJECTS } from '@ferry/protocol';
import type { CellEntry, WorkerEntry } from './scheduler.js';
import type { Store } from './store.js';
import { toProtoSpec } from './spec.js';

/**
 * The coordinator's state as FerryEvents: what it publishes to NATS as it decides, and what its
 * Events.Watch feed (and `ferry dashboard --run DIR`) replays from the store. One mapping for all.
 */

export function cellEvent(c: CellEntry, resultJson: string | undefined, workerName: string): CellEvent {
  const r = resultJson ? parseCellResult(resultJson) : undefined;
  return CellEvent.fromPartial({
    cellId: c.id,
    spec: toProtoSpec(c.spec),
    state: c.state,
    attempts: c.attempts,
    worker: workerName,
    error: c.error ?? '',
    ...(r
      ? {
          bestValAccuracy: r.bestValAccuracy,
          bestEpoch: r.bestEpoch,
          wallMs: r.wallMs,
          imagesPerSec: r.imagesPerSec,
          classes: [...r.classes],
          confusion: r.confusion.map((row) => ConfusionRow.fromPartial({ counts: [...row] })),
          perClassAccuracy: [...r.perClassAccuracy],
          valPredictions: [...(r.predictions?.predicted ?? [])],
          valLabels: [...(r.predictions?.labels ?? [])],
          valSetHash: r.predictions?.valSetHash ?? '',
        }
      : {}),
  });
}

/** An epoch report (the worker's EpochMetrics JSON) as the event workers publish on NATS. */
export function epochEvent(cellId: string, worker: string, metricsJson: string, best: boolean): EpochEvent {
  const m = JSON.parse(metricsJson) as Partial<Record<string, unknown>>;
  const num = (k: string): number => (typeof m[k] === 'number' && Number.isFinite(m[k]) ? (m[k] as number) : 0);
  const confusion = Array.isArray(m['confusion']) ? (m['confusion'] as number[][]) : [];
  const perClass = Array.isArray(m['perClassAccuracy']) ? (m['perClassAccuracy'] as unknown[]) : [];
  return EpochEvent.fromPartial({
    cellId,
    worker,
    epoch: num('epoch'),
    lr: num('lr'),
    trainLoss: num('trainLoss'),
    trainAccuracy: num('trainAccuracy'),
    valLoss: num('valLoss'),
    valAccuracy: num('valAccuracy'),
    confusion: confusion.map((row) =>
      ConfusionRow.fromPartial({ counts: row.map((v) => Math.max(0, Math.trunc(Number(v) || 0))) }),
    ),
    perClassAccuracy: perClass.map((v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0)),
    trainMs: num('trainMs'),
    valMs: num('valMs'),
    dataWaitMs: num('dataWaitMs'),
    imagesPerSec: num('imagesPerSec'),
    best,
  });
}

export interface SubjectEvent {
  readonly subject: string;
  readonly event: FerryEvent;
}

/** Everything a store holds, as events in an order a dashboard can apply: sweeps, cells, epochs, workers. */
export function storeEvents(store: Store, now = new Date()): SubjectEvent[] {
  const time = now.toISOString();
  const out: SubjectEvent[] = [];
  const cells = store.cells();
  const workers = new Map(store.workers().map((w) => [w.id, w] as [string, WorkerEntry]));
  for (const s of store.sweeps()) {
    const count = cells.filter((c) => c.sweepIds.includes(s.id)).length;
    out.push({
      subject: SUBJECTS.sweep(s.id),
      event: FerryEvent.fromPartial({
        sweepId: s.id,
        time,
        sweep: { name: s.name, cells: count, createdAt: s.createdAt },
      }),
    });
  }
  for (const c of cells) {
    const worker = c.workerId ? (workers.get(c.workerId)?.name ?? c.workerId) : '';
    const epochs = store.epochs(c.id);
    let bestAcc = -1;
    const epochEvents = epochs.map((e) => {
      const ev = epochEvent(c.id, worker, e.metricsJson, false);
      const best = ev.valAccuracy > bestAcc;
      if (best) bestAcc = ev.valAccuracy;
      return { ...ev, best };
    });
    const cell = cellEvent(c, c.state === 'done' ? store.result(c.id) : undefined, worker);
    for (const sweepId of c.sweepIds) {
      for (const epoch of epochEvents)
        out.push({ subject: SUBJECTS.epoch(sweepId, c.id), event: FerryEvent.fromPartial({ sweepId, time, epoch }) });
      out.push({ subject: SUBJECTS.cell(sweepId, c.id), event: FerryEvent.fromPartial({ sweepId, time, cell }) });
    }
  }
  for (const w of workers.values()) {
    out.push({
      subject: SUBJECTS.worker(SUBJECTS.CLUSTER, w.id),
      event: FerryEvent.fromPartial({
        sweepId: SUBJECTS.CLUSTER,
        time,
        worker: { workerId: w.id, name: w.name, backend: w.backend, device: w.device, state: w.state },
      }),
    });
  }
  return out;
}
