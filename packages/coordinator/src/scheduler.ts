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
  /** Rank 0 of the running attempt (the worker that reports the result). */
  readonly workerId: string | null;
  /** Every worker of the running attempt, by rank (one for a single-worker cell). */
  readonly members: readonly string[];
  /** Increments each time a (gang) attempt starts: a re-formed group is a new generation. */
  readonly generation: number;
  /** When a gang cell first waited for enough idle workers (null: not waiting). */
  readonly waitingSince: number | null;
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
  /** Since when the worker has been polling with nothing to run (null: busy or not polling). */
  readonly idleSince: number | null;
  /** host:port of the worker's Peer service (data-parallel groups); empty when it has none. */
  readonly peerAddress: string;
}

export interface SchedulerConfig {
  readonly leaseMs: number;
  readonly heartbeatIntervalMs: number;
  readonly defaultMaxAttempts: number;
  /**
   * How long a gang cell (`workers: k`) lets single-worker cells take idle workers before it holds
   * them back for itself; after twice this, with fewer than k capable workers alive, it fails.
   */
  readonly gangTimeoutMs: number;
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
  /**
   * After a coordinator restart: until this time no worker is declared lost and no recovered lease
   * expires, so that workers backing off have time to reconnect and claim their cells (0: none).
   */
  readonly recoveringUntil: number;
}

/** A coordinator restarted from its store: when it started and how long workers have to come back. */
export interface Recovery {
  readonly now: number;
  readonly graceMs: number;
}

export interface RunningClaim {
  readonly cellId: string;
  readonly attemptId: string;
  readonly epoch: number;
}

export type SchedulerEvent =
  | {
      readonly type: 'submit';
      readonly now: number;
      readonly sweepId: string;
      readonly cells: readonly { id: string; spec: CellSpec }[];
      readonly maxAttempts?: number;
    }
  | {
      readonly type: 'register';
      readonly now: number;
      readonly workerId: string;
      readonly name: string;
      readonly sessionId: string;
      readonly backend: string;
      readonly device: string;
      readonly running: readonly RunningClaim[];
      readonly peerAddress?: string;
    }
  | {
      readonly type: 'heartbeat';
      readonly now: number;
      readonly workerId: string;
      readonly sessionId: string;
      readonly running: readonly RunningClaim[];
    }
  | {
      readonly type: 'poll';
      readonly now: number;
      readonly workerId: string;
      readonly sessionId: string;
      readonly newAttemptId: string;
    }
  | { readonly type: 'epoch'; readonly now: number; readonly attemptId: string; readonly epoch: number }
  | { readonly type: 'checkpoint'; readonly now: number; readonly attemptId: string; readonly epochsDone: number }
  | { readonly type: 'complete'; readonly now: number; readonly attemptId: string }
  | {
      readonly type: 'fail';
      readonly now: number;
      readonly attemptId: string;
      readonly message: string;
      readonly retryable: boolean;
      readonly excludeWorker?: boolean;
    }
  | { readonly type: 'release'; readonly now: number; readonly attemptId: string; readonly reason: string }
  | { readonly type: 'tick'; readonly now: number }
  | { readonly type: 'cancel'; readonly now: number; readonly sweepId: string }
  | { readonly type: 'retry'; readonly now: number; readonly sweepId: string };

export type SchedulerAction =
  | {
      readonly type: 'assign';
      readonly workerId: string;
      readonly cellId: string;
      readonly attemptId: string;
      readonly rank: number;
      readonly members: readonly string[];
      readonly generation: number;
    }
  /** Persist the cell's row. */
  | { readonly type: 'saveCell'; readonly cell: CellEntry }
  | { readonly type: 'saveWorker'; readonly worker: WorkerEntry }
  | {
      readonly type: 'attemptStarted';
      readonly attemptId: string;
      readonly cellId: string;
      readonly workerId: string;
      readonly at: number;
    }
  | {
      readonly type: 'attemptEnded';
      readonly attemptId: string;
      readonly outcome: 'done' | 'failed' | 'lost' | 'released' | 'cancelled';
      readonly error: string | null;
      readonly at: number;
    }
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

export function initialState(
  config: SchedulerConfig,
  cells: readonly CellEntry[] = [],
  workers: readonly WorkerEntry[] = [],
  recovery?: Recovery,
): SchedulerState {
  const recoveringUntil = recovery ? recovery.now + Math.max(recovery.graceMs, config.leaseMs) : 0;
  // Running cells get a fresh lease: their workers have until then to reconnect and claim them.
  const sorted = [...cells]
    .sort((a, b) => a.seq - b.seq)
    .map((c) => (recovery && c.state === 'running' ? { ...c, leaseUntil: recoveringUntil } : c));
  const running = sorted.filter((c) => c.state === 'running' && c.attemptId);
  return {
    config,
    cells: new Map(sorted.map((c) => [c.id, c])),
    workers: new Map(workers.map((w) => [w.id, w])),
    byAttempt: new Map(running.map((c) => [c.attemptId!, c.id])),
    byWorker: new Map(running.flatMap((c) => c.members.map((m) => [m, c.id] as [string, string]))),
    nextSeq: cells.reduce((m, c) => Math.max(m, c.seq + 1), 0),
    recoveringUntil,
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
    if (old?.attemptId) {
      this.byAttempt.delete(old.attemptId);
      for (const m of old.members) if (this.byWorker.get(m) === c.id) this.byWorker.delete(m);
    }
    if (c.state === 'running' && c.attemptId) {
      this.byAttempt.set(c.attemptId, c.id);
      for (const m of c.members) this.byWorker.set(m, c.id);
    }
    this.cells.set(c.id, c);
    this.actions.push({ type: 'saveCell', cell: c });
  }

  setWorker(w: WorkerEntry): void {
    this.workers.set(w.id, w);
    this.actions.push({ type: 'saveWorker', worker: w });
  }

  /** Ends the running attempt of `c`: back to pending, or failed when attempts are used up. */
  endAttempt(
    c: CellEntry,
    outcome: 'failed' | 'lost' | 'released',
    error: string | null,
    now: number,
    opts: { countsAsFailure: boolean; retryable: boolean; excludeWorker?: boolean },
  ): void {
    this.actions.push({ type: 'attemptEnded', attemptId: c.attemptId!, outcome, error, at: now });
    // A gang attempt ends for all its ranks (the generation is over).
    for (const m of c.members.slice(1))
      this.actions.push({ type: 'stopAttempt', workerId: m, attemptId: c.attemptId! });
    const attempts = opts.countsAsFailure ? c.attempts : Math.max(0, c.attempts - 1);
    const exhausted = !opts.retryable || attempts >= c.maxAttempts;
    this.setCell({
      ...c,
      state: exhausted && opts.countsAsFailure ? 'failed' : 'pending',
      attempts,
      attemptId: null,
      workerId: null,
      members: [],
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

function largestDivisorAtMost(n: number, max: number): number {
  for (let d = Math.min(n, max); d >= 1; d--) if (n % d === 0) return d;
  return 0;
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
          if (!existing.sweepIds.includes(event.sweepId))
            b.setCell({ ...existing, sweepIds: [...existing.sweepIds, event.sweepId] });
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
          members: [],
          generation: 0,
          waitingSince: null,
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
      b.setWorker({
        id: event.workerId,
        name: event.name,
        sessionId: event.sessionId,
        backend: event.backend,
        device: event.device,
        lastSeen: event.now,
        state: 'alive',
        idleSince: null,
        peerAddress: event.peerAddress ?? '',
      });
      const claimed = new Set(event.running.map((r) => r.attemptId));
      for (const r of event.running) {
        const c = b.cells.get(r.cellId);
        if (c && c.state === 'running' && c.attemptId === r.attemptId && c.members.includes(event.workerId)) {
          // A reconnecting worker (or a restarted coordinator) keeps the cell it is running.
          b.setCell({ ...c, leaseUntil: event.now + leaseMs, epoch: Math.max(c.epoch, r.epoch) });
        } else {
          b.actions.push({ type: 'stopAttempt', workerId: event.workerId, attemptId: r.attemptId });
        }
      }
      // Attempts the coordinator thinks this worker runs, which it no longer claims, are lost.
      const held = b.byWorker.get(event.workerId);
      const c = held === undefined ? undefined : b.cells.get(held);
      if (c && c.state === 'running' && c.members.includes(event.workerId) && !claimed.has(c.attemptId!)) {
        b.endAttempt(c, 'lost', 'the worker restarted without it', event.now, {
          countsAsFailure: true,
          retryable: true,
        });
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
        if (c && c.state === 'running' && c.attemptId === r.attemptId && c.members.includes(w.id)) {
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
      const heldId = b.byWorker.get(w.id);
      if (heldId !== undefined) {
        // The worker asks for work while it holds a cell: its assignment was not delivered
        // (a gang member woken later, or a lost response). Deliver it (again).
        const held = b.cells.get(heldId)!;
        b.setWorker({ ...w, lastSeen: event.now, idleSince: null });
        b.actions.push({
          type: 'assign',
          workerId: w.id,
          cellId: held.id,
          attemptId: held.attemptId!,
          rank: held.members.indexOf(w.id),
          members: held.members,
          generation: held.generation,
        });
        break;
      }
      const me: WorkerEntry = { ...w, lastSeen: event.now, idleSince: w.idleSince ?? event.now };
      b.setWorker(me);
      const capable = (c: CellEntry, x: WorkerEntry): boolean =>
        c.spec.backends.length === 0 || c.spec.backends.includes(x.backend);
      const start = (c: CellEntry, members: string[]): void => {
        const generation = c.generation + 1;
        b.setCell({
          ...c,
          state: 'running',
          attempts: c.attempts + 1,
          attemptId: event.newAttemptId,
          workerId: members[0]!,
          members,
          generation,
          waitingSince: null,
          leaseUntil: event.now + leaseMs,
          error: null,
        });
        b.actions.push({
          type: 'attemptStarted',
          attemptId: event.newAttemptId,
          cellId: c.id,
          workerId: members.join(','),
          at: event.now,
        });
        members.forEach((m, rank) => {
          b.setWorker({ ...b.workers.get(m)!, idleSince: null });
          b.actions.push({
            type: 'assign',
            workerId: m,
            cellId: c.id,
            attemptId: event.newAttemptId,
            rank,
            members,
            generation,
          });
        });
      };
      // First in, first out. A gang cell (workers: k) starts when k capable workers are idle at
      // once (all or nothing); until then later single-worker cells may use idle workers, for up
      // to gangTimeoutMs, after which the gang holds idle workers back for itself. A worker whose
      // copy of a cell's dataset did not match is not offered that cell again.
      for (const c of b.cells.values()) {
        if (c.state !== 'pending' || !capable(c, me) || c.excludedWorkers.includes(me.id)) continue;
        const k = Math.max(1, c.spec.workers);
        if (k > 1) {
          const waitingSince = c.waitingSince ?? event.now;
          if (c.waitingSince === null) b.setCell({ ...c, waitingSince });
          const idle = [...b.workers.values()]
            .filter(
              (x) =>
                x.state === 'alive' && x.idleSince !== null && x.id !== me.id && !b.byWorker.has(x.id) && capable(c, x),
            )
            .sort((x, y) => x.idleSince! - y.idleSince!);
          if (idle.length + 1 >= k) {
            start(b.cells.get(c.id)!, [me.id, ...idle.slice(0, k - 1).map((x) => x.id)]);
            break;
          }
          if (event.now - waitingSince >= state.config.gangTimeoutMs) {
            // A group that already ran (it lost a rank) re-forms smaller rather than wait forever:
            // the largest size the idle workers allow that divides the batch.
            const smaller = c.generation > 0 ? largestDivisorAtMost(c.spec.batchSize, idle.length + 1) : 0;
            if (smaller >= 1 && smaller < k) {
              start(b.cells.get(c.id)!, [me.id, ...idle.slice(0, smaller - 1).map((x) => x.id)]);
              break;
            }
            break; // hold this worker for the gang
          }
          continue;
        }
        start(c, [me.id]);
        break;
      }
      break;
    }
    case 'epoch':
    case 'checkpoint': {
      const c = findByAttempt(state, event.attemptId);
      if (!c) {
        b.actions.push({
          type: 'rejected',
          attemptId: event.attemptId,
          reason: 'attempt is not leased (lost, cancelled or finished)',
        });
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
        b.actions.push({
          type: 'rejected',
          attemptId: event.attemptId,
          reason: 'attempt is not leased; its result is not recorded',
        });
        break;
      }
      b.actions.push({ type: 'attemptEnded', attemptId: event.attemptId, outcome: 'done', error: null, at: event.now });
      for (const m of c.members.slice(1))
        b.actions.push({ type: 'stopAttempt', workerId: m, attemptId: event.attemptId });
      b.setCell({ ...c, state: 'done', attemptId: null, workerId: null, members: [], leaseUntil: 0, error: null });
      break;
    }
    case 'fail': {
      const c = findByAttempt(state, event.attemptId);
      if (!c) {
        b.actions.push({ type: 'rejected', attemptId: event.attemptId, reason: 'attempt is not leased' });
        break;
      }
      // A dataset mismatch is the worker's problem, not the cell's: it does not use up an attempt,
      // and that worker is not offered the cell again (the error stays visible in the status).
      b.endAttempt(c, 'failed', event.message, event.now, {
        countsAsFailure: !event.excludeWorker,
        retryable: event.retryable,
        ...(event.excludeWorker ? { excludeWorker: true } : {}),
      });
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
        if (w.state === 'alive' && Math.max(w.lastSeen + leaseMs, state.recoveringUntil) < event.now)
          b.setWorker({ ...w, state: 'lost', idleSince: null });
      }
      for (const id of [...b.byAttempt.values()]) {
        const c = b.cells.get(id)!;
        const lostRank = c.members.findIndex((m) => b.workers.get(m)?.state === 'lost');
        if (c.state === 'running' && c.members.length > 1 && lostRank >= 0) {
          // One lost rank ends the generation; the group re-forms from the last checkpoint.
          for (const m of c.members.slice(0, 1))
            b.actions.push({ type: 'stopAttempt', workerId: m, attemptId: c.attemptId! });
          b.endAttempt(
            c,
            'lost',
            `rank ${lostRank} (worker ${b.workers.get(c.members[lostRank]!)?.name ?? '?'}) was lost`,
            event.now,
            { countsAsFailure: true, retryable: true },
          );
          continue;
        }
        if (c.state === 'running' && c.leaseUntil < event.now) {
          const w = c.workerId ? b.workers.get(c.workerId) : undefined;
          if (w) b.actions.push({ type: 'stopAttempt', workerId: w.id, attemptId: c.attemptId! });
          b.endAttempt(
            c,
            'lost',
            `lease expired (worker ${w?.name ?? c.workerId ?? '?'} stopped heartbeating)`,
            event.now,
            { countsAsFailure: true, retryable: true },
          );
        }
      }
      // A gang that cannot form: fewer capable workers alive than it needs, for twice the gang timeout.
      for (const c of b.cells.values()) {
        if (
          c.state !== 'pending' ||
          c.waitingSince === null ||
          event.now - c.waitingSince < 2 * state.config.gangTimeoutMs
        )
          continue;
        if (c.generation > 0) continue; // a group that ran once re-forms smaller instead
        const k = Math.max(1, c.spec.workers);
        const alive = [...b.workers.values()].filter(
          (x) => x.state === 'alive' && (c.spec.backends.length === 0 || c.spec.backends.includes(x.backend)),
        ).length;
        if (alive < k)
          b.setCell({
            ...c,
            state: 'failed',
            waitingSince: null,
            error: `needs ${k} workers at once (workers: ${k}); only ${alive} capable worker(s) alive`,
          });
      }
      break;
    }
    case 'cancel': {
      for (const c of [...b.cells.values()]) {
        if (!c.sweepIds.includes(event.sweepId) || (c.state !== 'pending' && c.state !== 'running')) continue;
        if (c.state === 'running') {
          b.actions.push({
            type: 'attemptEnded',
            attemptId: c.attemptId!,
            outcome: 'cancelled',
            error: null,
            at: event.now,
          });
          for (const m of c.members) b.actions.push({ type: 'stopAttempt', workerId: m, attemptId: c.attemptId! });
        }
        b.setCell({
          ...c,
          state: 'cancelled',
          attemptId: null,
          workerId: null,
          members: [],
          leaseUntil: 0,
          waitingSince: null,
        });
      }
      break;
    }
    case 'retry': {
      for (const c of [...b.cells.values()]) {
        if (c.sweepIds.includes(event.sweepId) && (c.state === 'failed' || c.state === 'cancelled')) {
          b.setCell({ ...c, state: 'pending', attempts: 0, error: null, excludedWorkers: [], waitingSince: null });
        }
      }
      break;
    }
  }
  return b.result();
}
