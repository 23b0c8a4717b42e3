import * as grpc from '@grpc/grpc-js';
import { EventPublisher, type NatsTarget } from '@ferry/events';
import { FerryEvent, SUBJECTS, type BatchJob, type EventsServer, type WatchRequest } from '@ferry/protocol';
import { cellEvent, storeEvents } from './events.js';
import { status } from './rpc.js';
import type { SchedulerAction, SchedulerState } from './scheduler-types.js';
import type { Store } from './store.js';

/** Unsent events an Events.Watch subscriber may fall behind by before it is cut. */
const WATCH_BUFFER_EVENTS = 100_000;

/**
 * Where the coordinator's events go: NATS (when configured) and every Events.Watch subscriber
 * (dashboards without NATS). The mapping from state to events is events.ts's.
 */
export class EventFeed {
  private readonly nats: EventPublisher | null;
  private readonly watchers = new Set<grpc.ServerWritableStream<WatchRequest, FerryEvent>>();
  private batchJobs: readonly BatchJob[] = [];

  constructor(
    target: NatsTarget | null,
    private readonly store: Store,
  ) {
    this.nats = target ? new EventPublisher({ target: { ...target, name: target.name ?? 'ferry-coordinator' } }) : null;
  }

  /** Whether anyone listens (events are not built for nobody). */
  get active(): boolean {
    return this.nats !== null || this.watchers.size > 0;
  }

  get watching(): boolean {
    return this.watchers.size > 0;
  }

  /** An event to NATS and to every watcher. */
  emit(subject: string, event: FerryEvent): void {
    this.nats?.publish(subject, event);
    this.toWatchers(event);
  }

  /** The workers' batch jobs as last reported (ferry run --slurm): ListWorkers answers them. */
  get jobs(): readonly BatchJob[] {
    return this.batchJobs;
  }

  /**
   * A new report of the batch jobs: each job that is new or changed (state, reason, node) becomes
   * an event. Held in memory only: ferry run reports every few seconds, so a restarted coordinator
   * has them again at once.
   */
  setJobs(jobs: readonly BatchJob[]): void {
    const before = new Map(this.batchJobs.map((j) => [j.jobId, j]));
    this.batchJobs = jobs;
    const time = new Date().toISOString();
    for (const job of jobs) {
      const b = before.get(job.jobId);
      if (b && b.state === job.state && b.reason === job.reason && b.node === job.node) continue;
      const sweepId = SUBJECTS.CLUSTER;
      this.emit(SUBJECTS.job(sweepId, job.jobId), FerryEvent.fromPartial({ sweepId, time, job }));
    }
  }

  /** An event to the watchers only (workers publish theirs to NATS themselves). */
  toWatchers(event: FerryEvent): void {
    for (const w of this.watchers) {
      // A watcher that does not read (a stalled dashboard) is cut rather than buffered without
      // bound; it reconnects and gets a fresh snapshot.
      if (w.writableLength > WATCH_BUFFER_EVENTS) {
        this.watchers.delete(w);
        w.emit(
          'error',
          status(grpc.status.RESOURCE_EXHAUSTED, 'event watcher too slow; reconnect for a fresh snapshot'),
        );
      } else w.write(event);
    }
  }

  /** Cell and worker state changes the scheduler decided, on every sweep the cell belongs to. */
  publish(actions: readonly SchedulerAction[], state: SchedulerState): void {
    if (!this.active) return;
    const time = new Date().toISOString();
    const nameOf = (id: string | null): string => (id ? (state.workers.get(id)?.name ?? id) : '');
    for (const a of actions) {
      if (a.type === 'saveCell') {
        const c = a.cell;
        const cell = cellEvent(c, c.state === 'done' ? this.store.result(c.id) : undefined, nameOf(c.workerId));
        for (const sweepId of c.sweepIds)
          this.emit(SUBJECTS.cell(sweepId, c.id), FerryEvent.fromPartial({ sweepId, time, cell }));
      } else if (a.type === 'saveWorker') {
        const w = a.worker;
        const cellId = state.byWorker.get(w.id);
        const sweepId = cellId ? (state.cells.get(cellId)?.sweepIds[0] ?? SUBJECTS.CLUSTER) : SUBJECTS.CLUSTER;
        const worker = {
          workerId: w.id,
          name: w.name,
          backend: w.backend,
          device: w.device,
          state: w.state,
          cellId: cellId ?? '',
          host: w.host,
          slurmJob: w.slurmJob,
        };
        this.emit(SUBJECTS.worker(sweepId, w.id), FerryEvent.fromPartial({ sweepId, time, worker }));
      }
    }
  }

  /** The Events service: everything the store holds, a HistoryEnd marker, then each event as it happens. */
  service(): EventsServer {
    return {
      watch: (call) => {
        for (const e of storeEvents(this.store)) call.write(e.event);
        const time = new Date().toISOString();
        for (const job of this.batchJobs) call.write(FerryEvent.fromPartial({ sweepId: SUBJECTS.CLUSTER, time, job }));
        call.write(FerryEvent.fromPartial({ time: new Date().toISOString(), historyEnd: {} }));
        this.watchers.add(call);
        const drop = (): void => void this.watchers.delete(call);
        call.on('cancelled', drop);
        call.on('close', drop);
        call.on('error', drop);
      },
    };
  }

  async close(): Promise<void> {
    for (const w of this.watchers) w.end();
    this.watchers.clear();
    await this.nats?.close();
  }
}
