import { cellLabel, sourceCellOf, waitingForSource } from '@ferry/common';
import { CellTable } from './cell-table.js';
import { StepDraft } from './step-draft.js';
import type {
  CellEntry,
  WorkerEntry,
  SchedulerConfig,
  SchedulerState,
  Recovery,
  RunningClaim,
  SchedulerEvent,
  StepResult,
} from './scheduler-types.js';

/**
 * The scheduler as a step function: step(state, event) -> { state, actions }. It decides; the
 * coordinator's I/O loop persists (store.ts) and talks (coordinator.ts). Time arrives in events,
 * so tests drive it without clocks or sockets. No I/O and no clock inside. Each event kind has one
 * handler; a handler reads and changes a StepDraft (the state it started from plus its changes),
 * whose commit is the next state: a step never changes the state it was given. The cells live in a
 * CellTable that shares unchanged entries between states, so a step on a 10,000-cell sweep costs
 * its changes, not a copy of every cell.
 */

export function initialState(
  config: SchedulerConfig,
  cells: readonly CellEntry[] = [],
  workers: readonly WorkerEntry[] = [],
  recovery?: Recovery,
): SchedulerState {
  // A grace only for what there is to recover: a first start, or one whose store holds no running
  // cell and no live worker, declares workers lost after a lease from the start.
  const held = cells.some((c) => c.state === 'running') || workers.some((w) => w.state === 'alive');
  const recoveringUntil = recovery && held ? recovery.now + Math.max(recovery.graceMs, config.leaseMs) : 0;
  // Running cells get a fresh lease: their workers have until then to reconnect and claim them.
  const sorted = [...cells]
    .sort((a, b) => a.seq - b.seq)
    .map((c) => (recovery && c.state === 'running' ? { ...c, leaseUntil: recoveringUntil } : c));
  const running = sorted.filter((c) => c.state === 'running' && c.attemptId);
  return {
    config,
    cells: CellTable.of(sorted),
    workers: new Map(workers.map((w) => [w.id, w])),
    byAttempt: new Map(running.map((c) => [c.attemptId!, c.id])),
    byWorker: new Map(running.flatMap((c) => c.members.map((m) => [m, c.id] as [string, string]))),
    nextSeq: cells.reduce((m, c) => Math.max(m, c.seq + 1), 0),
    recoveringUntil,
  };
}

/** The scheduler's one entry point: the event's handler decides on a draft of the next state. */
export function step(state: SchedulerState, event: SchedulerEvent): StepResult {
  const d = new StepDraft(state);
  handle(d, event);
  // Only a submission, a retry or a cell that failed or was cancelled changes what is blocked.
  const ended = d.actions.some(
    (a) => a.type === 'saveCell' && (a.cell.state === 'failed' || a.cell.state === 'cancelled'),
  );
  if (ended || event.type === 'submit' || event.type === 'retry') settleDependants(d);
  return d.commit();
}

function handle(d: StepDraft, e: SchedulerEvent): void {
  switch (e.type) {
    case 'submit':
      return onSubmit(d, e);
    case 'register':
      return onRegister(d, e);
    case 'heartbeat':
      return onHeartbeat(d, e);
    case 'poll':
      return onPoll(d, e);
    case 'epoch':
    case 'checkpoint':
      return onProgress(d, e);
    case 'complete':
      return onComplete(d, e);
    case 'fail':
      return onFail(d, e);
    case 'release':
      return onRelease(d, e);
    case 'tick':
      return onTick(d, e);
    case 'cancel':
      return onCancel(d, e);
    case 'retry':
      return onRetry(d, e);
  }
}

type EventOf<T extends SchedulerEvent['type']> = Extract<SchedulerEvent, { type: T }>;

// --- shared helpers -------------------------------------------------------------------------

/** The running cell of an attempt, or undefined when the attempt is not (or no longer) leased. */
function leasedCell(d: StepDraft, attemptId: string): CellEntry | undefined {
  const id = d.cellOfAttempt(attemptId);
  const c = id === undefined ? undefined : d.cell(id);
  return c && c.state === 'running' && c.attemptId === attemptId ? c : undefined;
}

/** The leased cell of an attempt; otherwise the request is rejected with `reason`. */
function leasedOrReject(d: StepDraft, attemptId: string, reason: string): CellEntry | undefined {
  const c = leasedCell(d, attemptId);
  if (!c) d.actions.push({ type: 'rejected', attemptId, reason });
  return c;
}

/** The worker of a live session; otherwise the worker is told to register again. */
function liveWorker(d: StepDraft, workerId: string, sessionId: string): WorkerEntry | undefined {
  const w = d.worker(workerId);
  if (w && w.sessionId === sessionId && w.state !== 'lost') return w;
  d.actions.push({ type: 'reregister', workerId });
  return undefined;
}

/** Claims of running attempts (registration, heartbeat): a valid one renews its lease, any other is stopped. */
function renewClaims(d: StepDraft, workerId: string, running: readonly RunningClaim[], now: number): void {
  for (const r of running) {
    const c = d.cell(r.cellId);
    if (c && c.state === 'running' && c.attemptId === r.attemptId && c.members.includes(workerId)) {
      d.setCell({ ...c, leaseUntil: now + d.config.leaseMs, epoch: Math.max(c.epoch, r.epoch) });
    } else {
      d.actions.push({ type: 'stopAttempt', workerId, attemptId: r.attemptId });
    }
  }
}

/** The attempt's end for every rank but rank 0 (whose own request or handling ends it). */
function stopOtherRanks(d: StepDraft, c: CellEntry, attemptId: string): void {
  for (const m of c.members.slice(1)) d.actions.push({ type: 'stopAttempt', workerId: m, attemptId });
}

interface EndOptions {
  readonly countsAsFailure: boolean;
  readonly retryable: boolean;
  readonly excludeWorker?: boolean;
}

/** Ends the running attempt of `c`: back to pending, or failed when attempts are used up. */
function endAttempt(
  d: StepDraft,
  c: CellEntry,
  outcome: 'failed' | 'lost' | 'released',
  error: string | null,
  now: number,
  opts: EndOptions,
): void {
  d.actions.push({ type: 'attemptEnded', attemptId: c.attemptId!, outcome, error, at: now });
  // A gang attempt ends for all its ranks (the generation is over).
  stopOtherRanks(d, c, c.attemptId!);
  const attempts = opts.countsAsFailure ? c.attempts : Math.max(0, c.attempts - 1);
  const exhausted = !opts.retryable || attempts >= c.maxAttempts;
  d.setCell({
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

/** The source a cell of a later stage waits for (not done yet), or undefined when it may run. */
export function waitingFor(cell: (id: string) => CellEntry | undefined, c: CellEntry): string | undefined {
  return waitingForSource(c, (id) => cell(id)?.state) ?? undefined;
}

/**
 * A pending cell whose source failed, was cancelled or is blocked itself is blocked by it (it
 * never ran: not a failure of its own); a blocked cell whose source is back (retried) is pending
 * again. Cells are in submission order, so a source is settled before the cells that start from it.
 */
function settleDependants(d: StepDraft): void {
  for (const { id } of d.cells()) {
    const c = d.cell(id)!;
    const src = sourceCellOf(c.spec.weights);
    if (src === null || (c.state !== 'pending' && c.state !== 'blocked')) continue;
    const s = d.cell(src);
    const gone = s !== undefined && (s.state === 'failed' || s.state === 'cancelled' || s.state === 'blocked');
    if (gone && c.state === 'pending') {
      const why = s.state === 'failed' ? 'failed' : s.state === 'cancelled' ? 'was cancelled' : 'is blocked';
      const error = `blocked by ${s.id.slice(0, 8)} (${cellLabel(s.spec)}) which ${why}`;
      d.setCell({ ...c, state: 'blocked', error, waitingSince: null });
    } else if (!gone && c.state === 'blocked') d.setCell({ ...c, state: 'pending', error: null });
  }
}

/** Whether worker `x` has a backend the cell allows. */
function capable(c: CellEntry, x: WorkerEntry): boolean {
  return c.spec.backends.length === 0 || c.spec.backends.includes(x.backend);
}

function largestDivisorAtMost(n: number, max: number): number {
  for (let d = Math.min(n, max); d >= 1; d--) if (n % d === 0) return d;
  return 0;
}

// --- one handler per event ------------------------------------------------------------------

function onSubmit(d: StepDraft, e: EventOf<'submit'>): void {
  for (const c of e.cells) {
    const existing = d.cell(c.id);
    if (existing) {
      // Never run a cell twice: a resubmitted cell keeps its state (only gains the sweep).
      if (!existing.sweepIds.includes(e.sweepId))
        d.setCell({ ...existing, sweepIds: [...existing.sweepIds, e.sweepId] });
      continue;
    }
    d.setCell({
      id: c.id,
      spec: c.spec,
      sweepIds: [e.sweepId],
      state: 'pending',
      attempts: 0,
      maxAttempts: e.maxAttempts ?? d.config.defaultMaxAttempts,
      attemptId: null,
      workerId: null,
      members: [],
      generation: 0,
      waitingSince: null,
      leaseUntil: 0,
      checkpointEpochs: 0,
      epoch: 0,
      error: null,
      seq: d.takeSeq(),
      excludedWorkers: [],
    });
  }
}

function onRegister(d: StepDraft, e: EventOf<'register'>): void {
  d.setWorker({
    id: e.workerId,
    name: e.name,
    sessionId: e.sessionId,
    backend: e.backend,
    device: e.device,
    lastSeen: e.now,
    state: 'alive',
    idleSince: null,
    peerAddress: e.peerAddress ?? '',
    host: e.host ?? '',
    slurmJob: e.slurmJob ?? '',
    ferryVersion: e.ferryVersion ?? '',
  });
  // A reconnecting worker (or a restarted coordinator) keeps the cell it is running.
  renewClaims(d, e.workerId, e.running, e.now);
  // Attempts the coordinator thinks this worker runs, which it no longer claims, are lost.
  const held = d.cellOfWorker(e.workerId);
  const c = held === undefined ? undefined : d.cell(held);
  const claimed = new Set(e.running.map((r) => r.attemptId));
  if (c && c.state === 'running' && c.members.includes(e.workerId) && !claimed.has(c.attemptId!)) {
    endAttempt(d, c, 'lost', 'the worker restarted without it', e.now, { countsAsFailure: true, retryable: true });
  }
}

function onHeartbeat(d: StepDraft, e: EventOf<'heartbeat'>): void {
  const w = liveWorker(d, e.workerId, e.sessionId);
  if (!w) return;
  d.setWorker({ ...w, lastSeen: e.now });
  renewClaims(d, w.id, e.running, e.now);
}

function onPoll(d: StepDraft, e: EventOf<'poll'>): void {
  const w = liveWorker(d, e.workerId, e.sessionId);
  if (!w) return;
  const heldId = d.cellOfWorker(w.id);
  if (heldId !== undefined) return redeliver(d, w, d.cell(heldId)!, e.now);
  const me: WorkerEntry = { ...w, lastSeen: e.now, idleSince: w.idleSince ?? e.now };
  d.setWorker(me);
  // First in, first out. A gang cell (workers: k) starts when k capable workers are idle at
  // once (all or nothing); until then later single-worker cells may use idle workers, for up
  // to gangTimeoutMs, after which the gang holds idle workers back for itself. A worker whose
  // copy of a cell's dataset did not match is not offered that cell again. A cell of a later
  // stage waits for its source cell to be done.
  for (const c of d.cells()) {
    if (c.state !== 'pending' || !capable(c, me) || c.excludedWorkers.includes(me.id)) continue;
    // A cell of a later stage starts from its source's best weights: not before the source is done.
    if (waitingFor((id) => d.cell(id), c) !== undefined) continue;
    const members = Math.max(1, c.spec.workers) > 1 ? gangMembers(d, c, me, e.now) : [me.id];
    if (members === 'wait') continue;
    if (members !== 'hold') startAttempt(d, d.cell(c.id)!, members, e.newAttemptId, e.now);
    return;
  }
}

/**
 * The worker asks for work while it holds a cell: its assignment was not delivered (a gang member
 * woken later, or a lost response). Deliver it (again).
 */
function redeliver(d: StepDraft, w: WorkerEntry, held: CellEntry, now: number): void {
  d.setWorker({ ...w, lastSeen: now, idleSince: null });
  d.actions.push({
    type: 'assign',
    workerId: w.id,
    cellId: held.id,
    attemptId: held.attemptId!,
    rank: held.members.indexOf(w.id),
    members: held.members,
    generation: held.generation,
  });
}

/**
 * Who starts gang cell `c` with the polling worker `me`, by rank: k idle capable workers; after the
 * gang timeout, a group that already ran re-forms smaller ('hold': `me` waits for the gang);
 * 'wait': not yet, `me` may take a later cell. Marks when the cell began to wait.
 */
function gangMembers(d: StepDraft, c: CellEntry, me: WorkerEntry, now: number): string[] | 'wait' | 'hold' {
  const k = Math.max(1, c.spec.workers);
  const waitingSince = c.waitingSince ?? now;
  if (c.waitingSince === null) d.setCell({ ...c, waitingSince });
  const idle = d
    .allWorkers()
    .filter((x) => x.state === 'alive' && x.idleSince !== null && x.id !== me.id && d.cellOfWorker(x.id) === undefined)
    .filter((x) => capable(c, x))
    .sort((x, y) => x.idleSince! - y.idleSince!);
  if (idle.length + 1 >= k) return [me.id, ...idle.slice(0, k - 1).map((x) => x.id)];
  if (now - waitingSince < d.config.gangTimeoutMs) return 'wait';
  // A group that already ran (it lost a rank) re-forms smaller rather than wait forever: the
  // largest size the idle workers allow that divides the batch.
  const smaller = c.generation > 0 ? largestDivisorAtMost(c.spec.batchSize, idle.length + 1) : 0;
  return smaller >= 1 && smaller < k ? [me.id, ...idle.slice(0, smaller - 1).map((x) => x.id)] : 'hold';
}

/** Starts a new attempt (generation) of `c` on `members`, by rank, and assigns it to each. */
function startAttempt(d: StepDraft, c: CellEntry, members: string[], attemptId: string, now: number): void {
  const generation = c.generation + 1;
  d.setCell({
    ...c,
    state: 'running',
    attempts: c.attempts + 1,
    attemptId,
    workerId: members[0]!,
    members,
    generation,
    waitingSince: null,
    leaseUntil: now + d.config.leaseMs,
    error: null,
  });
  d.actions.push({ type: 'attemptStarted', attemptId, cellId: c.id, workerId: members.join(','), at: now });
  members.forEach((m, rank) => {
    d.setWorker({ ...d.worker(m)!, idleSince: null });
    d.actions.push({ type: 'assign', workerId: m, cellId: c.id, attemptId, rank, members, generation });
  });
}

function onProgress(d: StepDraft, e: EventOf<'epoch' | 'checkpoint'>): void {
  const c = leasedOrReject(d, e.attemptId, 'attempt is not leased (lost, cancelled or finished)');
  if (!c) return;
  const leaseUntil = e.now + d.config.leaseMs;
  d.setCell(
    e.type === 'epoch'
      ? { ...c, epoch: Math.max(c.epoch, e.epoch), leaseUntil }
      : { ...c, checkpointEpochs: Math.max(c.checkpointEpochs, e.epochsDone), leaseUntil },
  );
}

function onComplete(d: StepDraft, e: EventOf<'complete'>): void {
  const c = leasedOrReject(d, e.attemptId, 'attempt is not leased; its result is not recorded');
  if (!c) return;
  d.actions.push({ type: 'attemptEnded', attemptId: e.attemptId, outcome: 'done', error: null, at: e.now });
  stopOtherRanks(d, c, e.attemptId);
  d.setCell({ ...c, state: 'done', attemptId: null, workerId: null, members: [], leaseUntil: 0, error: null });
}

function onFail(d: StepDraft, e: EventOf<'fail'>): void {
  const c = leasedOrReject(d, e.attemptId, 'attempt is not leased');
  if (!c) return;
  // A dataset mismatch is the worker's problem, not the cell's: it does not use up an attempt,
  // and that worker is not offered the cell again (the error stays visible in the status).
  endAttempt(d, c, 'failed', e.message, e.now, {
    countsAsFailure: !e.excludeWorker,
    retryable: e.retryable,
    ...(e.excludeWorker ? { excludeWorker: true } : {}),
  });
}

function onRelease(d: StepDraft, e: EventOf<'release'>): void {
  const c = leasedCell(d, e.attemptId);
  if (c) endAttempt(d, c, 'released', null, e.now, { countsAsFailure: false, retryable: true });
}

function onTick(d: StepDraft, e: EventOf<'tick'>): void {
  for (const w of d.allWorkers()) {
    if (w.state === 'alive' && Math.max(w.lastSeen + d.config.leaseMs, d.recoveringUntil) < e.now)
      d.setWorker({ ...w, state: 'lost', idleSince: null });
  }
  for (const id of d.runningCellIds()) endIfLost(d, d.cell(id)!, e.now);
  failUnformableGangs(d, e.now);
}

/** Ends a running attempt that lost a rank (gang) or whose lease expired. */
function endIfLost(d: StepDraft, c: CellEntry, now: number): void {
  if (c.state !== 'running') return;
  const lost = { countsAsFailure: true, retryable: true };
  const lostRank = c.members.findIndex((m) => d.worker(m)?.state === 'lost');
  if (c.members.length > 1 && lostRank >= 0) {
    // One lost rank ends the generation; the group re-forms from the last checkpoint.
    d.actions.push({ type: 'stopAttempt', workerId: c.members[0]!, attemptId: c.attemptId! });
    const name = d.worker(c.members[lostRank]!)?.name ?? '?';
    endAttempt(d, c, 'lost', `rank ${lostRank} (worker ${name}) was lost`, now, lost);
  } else if (c.leaseUntil < now) {
    const w = c.workerId ? d.worker(c.workerId) : undefined;
    if (w) d.actions.push({ type: 'stopAttempt', workerId: w.id, attemptId: c.attemptId! });
    const who = w?.name ?? c.workerId ?? '?';
    endAttempt(d, c, 'lost', `lease expired (worker ${who} stopped heartbeating)`, now, lost);
  }
}

/** A gang that cannot form: fewer capable workers alive than it needs, for twice the gang timeout. */
function failUnformableGangs(d: StepDraft, now: number): void {
  for (const c of d.cells()) {
    if (c.state !== 'pending' || c.waitingSince === null || now - c.waitingSince < 2 * d.config.gangTimeoutMs) continue;
    if (c.generation > 0) continue; // a group that ran once re-forms smaller instead
    const k = Math.max(1, c.spec.workers);
    const alive = d.allWorkers().filter((x) => x.state === 'alive' && capable(c, x)).length;
    if (alive < k)
      d.setCell({
        ...c,
        state: 'failed',
        waitingSince: null,
        error: `needs ${k} workers at once (workers: ${k}); only ${alive} capable worker(s) alive`,
      });
  }
}

function onCancel(d: StepDraft, e: EventOf<'cancel'>): void {
  for (const c of d.cells()) {
    if (!c.sweepIds.includes(e.sweepId) || (c.state !== 'pending' && c.state !== 'running')) continue;
    if (c.state === 'running') {
      d.actions.push({ type: 'attemptEnded', attemptId: c.attemptId!, outcome: 'cancelled', error: null, at: e.now });
      for (const m of c.members) d.actions.push({ type: 'stopAttempt', workerId: m, attemptId: c.attemptId! });
    }
    d.setCell({
      ...c,
      state: 'cancelled',
      attemptId: null,
      workerId: null,
      members: [],
      leaseUntil: 0,
      waitingSince: null,
    });
  }
}

function onRetry(d: StepDraft, e: EventOf<'retry'>): void {
  for (const c of d.cells()) {
    if (c.sweepIds.includes(e.sweepId) && (c.state === 'failed' || c.state === 'cancelled'))
      d.setCell({ ...c, state: 'pending', attempts: 0, error: null, excludedWorkers: [], waitingSince: null });
  }
}
