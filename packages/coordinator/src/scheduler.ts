import type { CellSpec } from './sweep.js';

/**
 * The scheduler as a step function: step(state, event) -> { state, actions }. It decides; the
 * coordinator's I/O loop persists (store.ts) and talks (coordinator.ts). Time arrives in events,
 * so tests drive it without clocks or sockets. No I/O and no clock inside; for speed (10,000-cell
 * sweeps) a step updates the state's maps in place and returns the same state object, so callers
 * keep using only the state a step returns.
 */

export type CellState = 'pending' | 'running' | 'done' | 'failed' | 'cancelled';

export interface CellEntry {
  readonly id: string;
  readonly spec: CellSpec;
  readonly sweepIds: readonly string[];
  readonly state: CellState;
  /** Attempts started so far (a released attempt, e.g. on SIGTERM, is not counted). */
  readonly attempts: number;
  readonly maxAttempts: number;
  readonly attemptId: string | null;
  readonly workerId: string | null;
  readonly leaseUntil: number;
  /** Epochs in the checkpoint the coordinator holds. */
  readonly checkpointEpochs: number;
  readonly epoch: number;
  readonly error: string | null;
  /** Submission order, for first-in first-out scheduling. */
  readonly seq: number;
  /** Workers that reported a dataset mismatch for this cell: not offered it again. */
  readonly excludedWorkers: readonly string[];
}

export interface WorkerEntry {
  readonly id: string;
  readonly name: string;
  readonly sessionId: string;
  readonly backend: string;
  readonly device: string;
  readonly lastSeen: number;
  readonly state: 'alive' | 'lost';
}

export interface SchedulerConfig {
  readonly leaseMs: number;
  readonly heartbeatIntervalMs: number;
  readonly defaultMaxAttempts: number;
}

export interface SchedulerState {
  readonly config: SchedulerConfig;
  /** In submission order (Map insertion order = seq order). */
  readonly cells: ReadonlyMap<string, CellEntry>;
  readonly workers: ReadonlyMap<string, WorkerEntry>;
  /** Running attempt -> its cell id. */
  readonly byAttempt: ReadonlyMap<string, string>;
  /** Worker -> the cell it runs. */
  readonly byWorker: ReadonlyMap<string, string>;
  readonly nextSeq: number;
}

export interface RunningClaim {
  readonly cellId: string;
  readonly attemptId: string;
  readonly epoch: number;
}

export type SchedulerEvent =
  | { readonly type: 'submit'; readonly now: number; readonly sweepId: string; readonly cells: readonly { id: string; spec: CellSpec }[]; readonly maxAttempts?: number }
  | {
      readonly type: 'register';
      readonly now: number;
      readonly workerId: string;
      readonly name: string;
      readonly sessionId: string;
      readonly backend: string;
      readonly device: string;
      readonly running: readonly RunningClaim[];
    }
  | { readonly type: 'heartbeat'; readonly now: number; readonly workerId: string; readonly sessionId: string; readonly running: readonly RunningClaim[] }
  | { readonly type: 'poll'; readonly now: number; readonly workerId: string; readonly sessionId: string; readonly newAttemptId: string }
  | { readonly type: 'epoch'; readonly now: number; readonly attemptId: string; readonly epoch: number }
  | { readonly type: 'checkpoint'; readonly now: number; readonly attemptId: string; readonly epochsDone: number }
  | { readonly type: 'complete'; readonly now: number; readonly attemptId: string }
  | { readonly type: 'fail'; readonly now: number; readonly attemptId: string; readonly message: string; readonly retryable: boolean; readonly excludeWorker?: boolean }
  | { readonly type: 'release'; readonly now: number; readonly attemptId: string; readonly reason: string }
  | { readonly type: 'tick'; readonly now: number }
  | { readonly type: 'cancel'; readonly now: number; readonly sweepId: string }
  | { readonly type: 'retry'; readonly now: number; readonly sweepId: string };

export type SchedulerAction =
  | { readonly type: 'assign'; readonly workerId: string; readonly cellId: string; readonly attemptId: string }
  /** Persist the cell's row. */
  | { readonly type: 'saveCell'; readonly cell: CellEntry }
  | { readonly type: 'saveWorker'; readonly worker: WorkerEntry }
  | { readonly type: 'attemptStarted'; readonly attemptId: string; readonly cellId: string; readonly workerId: string; readonly at: number }
  | { readonly type: 'attemptEnded'; readonly attemptId: string; readonly outcome: 'done' | 'failed' | 'lost' | 'released' | 'cancelled'; readonly error: string | null; readonly at: number }
  /** Tell a worker to stop an attempt (in its next heartbeat response). */
  | { readonly type: 'stopAttempt'; readonly workerId: string; readonly attemptId: string }
  /** The worker's session is unknown: it must register again. */
  | { readonly type: 'reregister'; readonly workerId: string }
  /** A request referred to an attempt the coordinator no longer leases (stale worker). */
  | { readonly type: 'rejected'; readonly attemptId: string; readonly reason: string };

export interface StepResult {
  readonly state: SchedulerState;
  readonly actions: readonly SchedulerAction[];
}

export function initialState(config: SchedulerConfig, cells: readonly CellEntry[] = [], workers: readonly WorkerEntry[] = []): SchedulerState {
  const sorted = [...cells].sort((a, b) => a.seq - b.seq);
  const running = sorted.filter((c) => c.state === 'running' && c.attemptId);
  return {
    config,
    cells: new Map(sorted.map((c) => [c.id, c])),
    workers: new Map(workers.map((w) => [w.id, w])),
    byAttempt: new Map(running.map((c) => [c.attemptId!, c.id])),
    byWorker: new Map(running.filter((c) => c.workerId).map((c) => [c.workerId!, c.id])),
    nextSeq: cells.reduce((m, c) => Math.max(m, c.seq + 1), 0),
  };
}

function findByAttempt(state: SchedulerState, attemptId: string): CellEntry | undefined {
  const id = state.byAttempt.get(attemptId);
  const c = id === undefined ? undefined : state.cells.get(id);
  return c && c.state === 'running' && c.attemptId === attemptId ? c : undefined;
}

class Builder {
  readonly cells: Map<string, CellEntry>;
  readonly workers: Map<string, WorkerEntry>;
  readonly byAttempt: Map<string, string>;
  readonly byWorker: Map<string, string>;
  nextSeq: number;
  readonly actions: SchedulerAction[] = [];

  constructor(readonly base: SchedulerState) {
    this.cells = base.cells as Map<string, CellEntry>;
    this.workers = base.workers as Map<string, WorkerEntry>;
    this.byAttempt = base.byAttempt as Map<string, string>;
    this.byWorker = base.byWorker as Map<string, string>;
    this.nextSeq = base.nextSeq;
  }

  setCell(c: CellEntry): void {
    const old = this.cells.get(c.id);
    if (old?.attemptId && (old.attemptId !== c.attemptId || c.state !== 'running')) {
      this.byAttempt.delete(old.attemptId);
      if (old.workerId && this.byWorker.get(old.workerId) === c.id) this.byWorker.delete(old.workerId);
    }
    if (c.state === 'running' && c.attemptId) {
      this.byAttempt.set(c.attemptId, c.id);
      if (c.workerId) this.byWorker.set(c.workerId, c.id);
    }
    this.cells.set(c.id, c);
    this.actions.push({ type: 'saveCell', cell: c });
  }

  setWorker(w: WorkerEntry): void {
    this.workers.set(w.id, w);
    this.actions.push({ type: 'saveWorker', worker: w });
  }

  /** Ends the running attempt of `c`: back to pending, or failed when attempts are used up. */
  endAttempt(c: CellEntry, outcome: 'failed' | 'lost' | 'released', error: string | null, now: number, opts: { countsAsFailure: boolean; retryable: boolean; excludeWorker?: boolean }): void {
    this.actions.push({ type: 'attemptEnded', attemptId: c.attemptId!, outcome, error, at: now });
    const attempts = opts.countsAsFailure ? c.attempts : Math.max(0, c.attempts - 1);
    const exhausted = !opts.retryable || attempts >= c.maxAttempts;
    this.setCell({
      ...c,
      state: exhausted && opts.countsAsFailure ? 'failed' : 'pending',
      attempts,
      attemptId: null,
      workerId: null,
      leaseUntil: 0,
      error: error ?? c.error,
      excludedWorkers: opts.excludeWorker && c.workerId ? [...c.excludedWorkers, c.workerId] : c.excludedWorkers,
    });
  }

  result(): StepResult {
    const state = this.base as { nextSeq: number } & SchedulerState;
    state.nextSeq = this.nextSeq;
    return { state, actions: this.actions };
  }
}

/** The scheduler's one entry point. */
export function step(state: SchedulerState, event: SchedulerEvent): StepResult {
  const b = new Builder(state);
  const { leaseMs } = state.config;
  switch (event.type) {
    case 'submit': {
      for (const c of event.cells) {
        const existing = b.cells.get(c.id);
        if (existing) {
          // Never run a cell twice: a resubmitted cell keeps its state (only gains the sweep).
          if (!existing.sweepIds.includes(event.sweepId)) b.setCell({ ...existing, sweepIds: [...existing.sweepIds, event.sweepId] });
          continue;
        }
        b.setCell({
          id: c.id,
          spec: c.spec,
          sweepIds: [event.sweepId],
          state: 'pending',
          attempts: 0,
          maxAttempts: event.maxAttempts ?? state.config.defaultMaxAttempts,
          attemptId: null,
          workerId: null,
          leaseUntil: 0,
          checkpointEpochs: 0,
          epoch: 0,
          error: null,
          seq: b.nextSeq++,
          excludedWorkers: [],
        });
      }
      break;
    }
    case 'register': {
      b.setWorker({ id: event.workerId, name: event.name, sessionId: event.sessionId, backend: event.backend, device: event.device, lastSeen: event.now, state: 'alive' });
      const claimed = new Set(event.running.map((r) => r.attemptId));
      for (const r of event.running) {
        const c = b.cells.get(r.cellId);
        if (c && c.state === 'running' && c.attemptId === r.attemptId) {
          // A reconnecting worker (or a restarted coordinator) keeps the cell it is running.
          b.setCell({ ...c, workerId: event.workerId, leaseUntil: event.now + leaseMs, epoch: Math.max(c.epoch, r.epoch) });
        } else {
          b.actions.push({ type: 'stopAttempt', workerId: event.workerId, attemptId: r.attemptId });
        }
      }
      // Attempts the coordinator thinks this worker runs, which it no longer claims, are lost.
      const held = b.byWorker.get(event.workerId);
      const c = held === undefined ? undefined : b.cells.get(held);
      if (c && c.state === 'running' && c.workerId === event.workerId && !claimed.has(c.attemptId!)) {
        b.endAttempt(c, 'lost', 'the worker restarted without it', event.now, { countsAsFailure: true, retryable: true });
      }
      break;
    }
    case 'heartbeat': {
      const w = b.workers.get(event.workerId);
      if (!w || w.sessionId !== event.sessionId || w.state === 'lost') {
        b.actions.push({ type: 'reregister', workerId: event.workerId });
        break;
      }
      b.setWorker({ ...w, lastSeen: event.now });
      for (const r of event.running) {
        const c = b.cells.get(r.cellId);
        if (c && c.state === 'running' && c.attemptId === r.attemptId && c.workerId === w.id) {
          b.setCell({ ...c, leaseUntil: event.now + leaseMs, epoch: Math.max(c.epoch, r.epoch) });
        } else {
          b.actions.push({ type: 'stopAttempt', workerId: w.id, attemptId: r.attemptId });
        }
      }
      break;
    }
    case 'poll': {
      const w = b.workers.get(event.workerId);
      if (!w || w.sessionId !== event.sessionId || w.state === 'lost') {
        b.actions.push({ type: 'reregister', workerId: event.workerId });
        break;
      }
      b.setWorker({ ...w, lastSeen: event.now });
      if (b.byWorker.has(w.id)) break;
      // First in, first out; a worker whose copy of a cell's dataset did not match takes that cell
      // only when nothing else is pending (it still counts attempts, so it cannot loop forever).
      let next: CellEntry | undefined;
      let fallback: CellEntry | undefined;
      for (const c of b.cells.values()) {
        if (c.state !== 'pending') continue;
        // Assignment by capability: a cell may name the backends allowed to run it.
        if (c.spec.backends.length > 0 && !c.spec.backends.includes(w.backend)) continue;
        if (!c.excludedWorkers.includes(w.id)) {
          next = c;
          break;
        }
        fallback ??= c;
      }
      next ??= fallback;
      if (!next) break;
      b.setCell({ ...next, state: 'running', attempts: next.attempts + 1, attemptId: event.newAttemptId, workerId: w.id, leaseUntil: event.now + leaseMs, error: null });
      b.actions.push({ type: 'attemptStarted', attemptId: event.newAttemptId, cellId: next.id, workerId: w.id, at: event.now });
      b.actions.push({ type: 'assign', workerId: w.id, cellId: next.id, attemptId: event.newAttemptId });
      break;
    }
    case 'epoch':
    case 'checkpoint': {
      const c = findByAttempt(state, event.attemptId);
      if (!c) {
        b.actions.push({ type: 'rejected', attemptId: event.attemptId, reason: 'attempt is not leased (lost, cancelled or finished)' });
        break;
      }
      b.setCell(
        event.type === 'epoch'
          ? { ...c, epoch: Math.max(c.epoch, event.epoch), leaseUntil: event.now + leaseMs }
          : { ...c, checkpointEpochs: Math.max(c.checkpointEpochs, event.epochsDone), leaseUntil: event.now + leaseMs },
      );
      break;
    }
    case 'complete': {
      const c = findByAttempt(state, event.attemptId);
      if (!c) {
        b.actions.push({ type: 'rejected', attemptId: event.attemptId, reason: 'attempt is not leased; its result is not recorded' });
        break;
      }
      b.actions.push({ type: 'attemptEnded', attemptId: event.attemptId, outcome: 'done', error: null, at: event.now });
      b.setCell({ ...c, state: 'done', attemptId: null, workerId: null, leaseUntil: 0, error: null });
      break;
    }
    case 'fail': {
      const c = findByAttempt(state, event.attemptId);
      if (!c) {
        b.actions.push({ type: 'rejected', attemptId: event.attemptId, reason: 'attempt is not leased' });
        break;
      }
      b.endAttempt(c, 'failed', event.message, event.now, { countsAsFailure: true, retryable: event.retryable, ...(event.excludeWorker ? { excludeWorker: true } : {}) });
      break;
    }
    case 'release': {
      const c = findByAttempt(state, event.attemptId);
      if (!c) break;
      b.endAttempt(c, 'released', null, event.now, { countsAsFailure: false, retryable: true });
      break;
    }
    case 'tick': {
      for (const w of [...b.workers.values()]) {
        if (w.state === 'alive' && w.lastSeen + leaseMs < event.now) b.setWorker({ ...w, state: 'lost' });
      }
      for (const id of [...b.byAttempt.values()]) {
        const c = b.cells.get(id)!;
        if (c.state === 'running' && c.leaseUntil < event.now) {
          const w = c.workerId ? b.workers.get(c.workerId) : undefined;
          b.endAttempt(c, 'lost', `lease expired (worker ${w?.name ?? c.workerId ?? '?'} stopped heartbeating)`, event.now, { countsAsFailure: true, retryable: true });
          if (w) b.actions.push({ type: 'stopAttempt', workerId: w.id, attemptId: c.attemptId! });
        }
      }
      break;
    }
    case 'cancel': {
      for (const c of [...b.cells.values()]) {
        if (!c.sweepIds.includes(event.sweepId) || (c.state !== 'pending' && c.state !== 'running')) continue;
        if (c.state === 'running') {
          b.actions.push({ type: 'attemptEnded', attemptId: c.attemptId!, outcome: 'cancelled', error: null, at: event.now });
          b.actions.push({ type: 'stopAttempt', workerId: c.workerId!, attemptId: c.attemptId! });
        }
        b.setCell({ ...c, state: 'cancelled', attemptId: null, workerId: null, leaseUntil: 0 });
      }
      break;
    }
    case 'retry': {
      for (const c of [...b.cells.values()]) {
        if (c.sweepIds.includes(event.sweepId) && (c.state === 'failed' || c.state === 'cancelled')) {
          b.setCell({ ...c, state: 'pending', attempts: 0, error: null, excludedWorkers: [] });
        }
      }
      break;
    }
  }
  return b.result();
}
