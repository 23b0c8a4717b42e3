import { CellEvent, EpochEvent, FerryEvent, SUBJECTS, type CellResult, type EpochMetrics } from '@ferry/protocol';
import type { CellEntry, WorkerEntry } from './scheduler-types.js';
import type { Store } from './store.js';
import { toProtoSpec } from './spec.js';

/**
 * The coordinator's state as FerryEvents: what it publishes to NATS as it decides, and what its
 * Events.Watch feed (and `ferry dashboard --run DIR`) replays from the store. One mapping for all.
 */

export function cellEvent(c: CellEntry, result: CellResult | undefined, workerName: string): CellEvent {
  return CellEvent.fromPartial({
    cellId: c.id,
    spec: toProtoSpec(c.spec),
    state: c.state,
    attempts: c.attempts,
    worker: workerName,
    error: c.error ?? '',
    ...(result
      ? {
          bestValAccuracy: result.bestValAccuracy,
          bestEpoch: result.bestEpoch,
          wallMs: result.wallMs,
          imagesPerSec: result.imagesPerSec,
          classes: result.classes,
          confusion: result.confusion,
          perClassAccuracy: result.perClassAccuracy,
          valPredictions: result.valPredictions,
          valLabels: result.valLabels,
          valSetHash: result.valSetHash,
        }
      : {}),
  });
}

/** An epoch report as the event workers publish on NATS (the same fields, with the cell and worker). */
export function epochEvent(cellId: string, worker: string, metrics: EpochMetrics, best: boolean): EpochEvent {
  return EpochEvent.fromPartial({ ...metrics, cellId, worker, best });
}

export interface SubjectEvent {
  readonly subject: string;
  readonly event: FerryEvent;
}

/** Everything a store holds, as events in an order a dashboard can apply: sweeps, advice, cells, epochs, workers. */
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
  for (const s of store.sweeps())
    for (const advice of store.advice(s.id))
      out.push({ subject: SUBJECTS.advice(s.id), event: FerryEvent.fromPartial({ sweepId: s.id, time, advice }) });
  for (const c of cells) {
    const worker = c.workerId ? (workers.get(c.workerId)?.name ?? c.workerId) : '';
    const epochs = store.epochs(c.id);
    let bestAcc = -1;
    const epochEvents = epochs.map((e) => {
      const ev = epochEvent(c.id, worker, e.metrics, false);
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
        worker: {
          workerId: w.id,
          name: w.name,
          backend: w.backend,
          device: w.device,
          state: w.state,
          host: w.host,
          slurmJob: w.slurmJob,
        },
      }),
    });
  }
  return out;
}
