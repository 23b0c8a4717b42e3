import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import {
  STUDY_DEFAULTS,
  Store,
  initialState,
  step,
  type CellSpec,
  type SchedulerAction,
  type SchedulerEvent,
  type SchedulerState,
} from '@ferry/coordinator';

const CONFIG = { leaseMs: 1000, heartbeatIntervalMs: 100, defaultMaxAttempts: 2, gangTimeoutMs: 500 };
const spec = (seed: number): CellSpec => ({
  ...STUDY_DEFAULTS,
  dataset: 'd',
  path: 'd',
  valFraction: null,
  color: 'rgb',
  strategy: 'finetune',
  model: 'resnet_tiny',
  seed,
});

/** Drives the pure scheduler with a list of events; returns the final state and every action. */
function run(
  events: SchedulerEvent[],
  state: SchedulerState = initialState(CONFIG),
): { state: SchedulerState; actions: SchedulerAction[] } {
  const actions: SchedulerAction[] = [];
  for (const e of events) {
    const r = step(state, e);
    state = r.state;
    actions.push(...r.actions);
  }
  return { state, actions };
}

const submit = (now: number, ...seeds: number[]): SchedulerEvent => ({
  type: 'submit',
  now,
  sweepId: 's',
  cells: seeds.map((s) => ({ id: `c${s}`, spec: spec(s) })),
});
const reg = (
  now: number,
  w: string,
  running: { cellId: string; attemptId: string; epoch: number }[] = [],
): SchedulerEvent => ({
  type: 'register',
  now,
  workerId: w,
  name: w,
  sessionId: `sess-${w}`,
  backend: 'wasm',
  device: 'cpu',
  running,
});
const poll = (now: number, w: string, attempt: string): SchedulerEvent => ({
  type: 'poll',
  now,
  workerId: w,
  sessionId: `sess-${w}`,
  newAttemptId: attempt,
});
const gang = (id: string, k: number, extra: Partial<CellSpec> = {}) => ({
  id,
  spec: { ...spec(100 + k), workers: k, ...extra },
});
const assignedRanks = (actions: SchedulerAction[]) =>
  actions
    .filter((a) => a.type === 'assign')
    .map((a) => {
      const x = a as { workerId: string; cellId: string; rank: number; generation: number };
      return `${x.workerId}:${x.cellId}#${x.rank}g${x.generation}`;
    });
const assigned = (actions: SchedulerAction[]) =>
  actions
    .filter((a) => a.type === 'assign')
    .map((a) => `${(a as { workerId: string }).workerId}:${(a as { cellId: string }).cellId}`);

describe('scheduler (pure step function)', () => {
  test('assigns pending cells first in, first out, one cell per worker (a holder polling again gets its cell again)', () => {
    const r = run([
      submit(0, 1, 2, 3),
      reg(0, 'w1'),
      reg(0, 'w2'),
      poll(1, 'w1', 'a1'),
      poll(1, 'w2', 'a2'),
      poll(2, 'w1', 'a3'),
    ]);
    expect(assigned(r.actions)).toEqual(['w1:c1', 'w2:c2', 'w1:c1']);
    expect(r.state.cells.get('c3')!.state).toBe('pending');
    expect(r.state.cells.get('c1')).toMatchObject({
      state: 'running',
      attempts: 1,
      attemptId: 'a1',
      workerId: 'w1',
      leaseUntil: 1001,
    });
  });

  test('heartbeats renew the lease; a worker that stops heartbeating loses its cell to another', () => {
    const r = run([
      submit(0, 1),
      reg(0, 'w1'),
      reg(0, 'w2'),
      poll(0, 'w1', 'a1'),
      {
        type: 'heartbeat',
        now: 800,
        workerId: 'w1',
        sessionId: 'sess-w1',
        running: [{ cellId: 'c1', attemptId: 'a1', epoch: 2 }],
      },
      { type: 'heartbeat', now: 1500, workerId: 'w2', sessionId: 'sess-w2', running: [] },
      { type: 'tick', now: 1700 },
    ]);
    expect(r.state.cells.get('c1')).toMatchObject({ state: 'running', leaseUntil: 1800, epoch: 2 });
    const later = run([{ type: 'tick', now: 1900 }, poll(1900, 'w2', 'a2')], r.state);
    expect(later.state.workers.get('w1')!.state).toBe('lost');
    expect(later.actions).toContainEqual({
      type: 'attemptEnded',
      attemptId: 'a1',
      outcome: 'lost',
      error: 'lease expired (worker w1 stopped heartbeating)',
      at: 1900,
    });
    expect(assigned(later.actions)).toEqual(['w2:c1']);
    expect(later.state.cells.get('c1')).toMatchObject({ attempts: 2, attemptId: 'a2' });
    // The lost worker comes back: told to re-register; its stale completion is not recorded.
    const stale = run(
      [
        {
          type: 'heartbeat',
          now: 2000,
          workerId: 'w1',
          sessionId: 'sess-w1',
          running: [{ cellId: 'c1', attemptId: 'a1', epoch: 3 }],
        },
        { type: 'complete', now: 2000, attemptId: 'a1' },
      ],
      later.state,
    );
    expect(stale.actions).toContainEqual({ type: 'reregister', workerId: 'w1' });
    expect(stale.actions.find((a) => a.type === 'rejected')).toBeDefined();
    expect(stale.state.cells.get('c1')!.state).toBe('running');
  });

  test('a failing cell is retried up to maxAttempts, then failed with its error; others are unaffected', () => {
    const r = run([
      submit(0, 1, 2),
      reg(0, 'w1'),
      poll(0, 'w1', 'a1'),
      { type: 'fail', now: 1, attemptId: 'a1', message: 'boom', retryable: true },
      poll(2, 'w1', 'a2'), // c1 again: it is still first in line
      { type: 'fail', now: 3, attemptId: 'a2', message: 'boom again', retryable: true },
      poll(4, 'w1', 'a3'),
      { type: 'complete', now: 5, attemptId: 'a3' },
    ]);
    expect(r.state.cells.get('c1')).toMatchObject({ state: 'failed', attempts: 2, error: 'boom again' });
    expect(r.state.cells.get('c2')!.state).toBe('done');
    expect(assigned(r.actions)).toEqual(['w1:c1', 'w1:c1', 'w1:c2']);
  });

  test('a non-retryable failure fails at once; a release (SIGTERM) does not count as an attempt', () => {
    const r = run([
      submit(0, 1, 2),
      reg(0, 'w1'),
      reg(0, 'w2'),
      poll(0, 'w1', 'a1'),
      poll(0, 'w2', 'a2'),
      { type: 'fail', now: 1, attemptId: 'a1', message: 'bad model', retryable: false },
      { type: 'release', now: 1, attemptId: 'a2', reason: 'SIGTERM' },
    ]);
    expect(r.state.cells.get('c1')).toMatchObject({ state: 'failed', attempts: 1 });
    expect(r.state.cells.get('c2')).toMatchObject({ state: 'pending', attempts: 0 });
  });

  test('resubmitting never duplicates a cell and never re-runs a finished one', () => {
    const first = run([submit(0, 1), reg(0, 'w1'), poll(0, 'w1', 'a1'), { type: 'complete', now: 1, attemptId: 'a1' }]);
    const again = run([submit(2, 1, 2), poll(3, 'w1', 'a2')], first.state);
    expect(again.state.cells.size).toBe(2);
    expect(again.state.cells.get('c1')!.state).toBe('done');
    expect(assigned(again.actions)).toEqual(['w1:c2']);
  });

  test('after a coordinator restart a reconnecting worker keeps its running cell; an unclaimed one is lost', () => {
    const before = run([submit(0, 1, 2), reg(0, 'w1'), reg(0, 'w2'), poll(0, 'w1', 'a1'), poll(0, 'w2', 'a2')]);
    // Restart: state reloaded from the store.
    const restored = initialState(CONFIG, [...before.state.cells.values()], [...before.state.workers.values()]);
    const r = run(
      [
        { ...reg(5, 'w1', [{ cellId: 'c1', attemptId: 'a1', epoch: 4 }]), sessionId: 'new-1' } as SchedulerEvent,
        { ...reg(5, 'w2', []), sessionId: 'new-2' } as SchedulerEvent,
      ],
      restored,
    );
    expect(r.state.cells.get('c1')).toMatchObject({ state: 'running', attemptId: 'a1', epoch: 4, leaseUntil: 1005 });
    expect(r.state.cells.get('c2')).toMatchObject({ state: 'pending', attempts: 1 });
  });

  test('a restarted coordinator gives workers its recovery grace: no worker lost, no lease expired before it ends', () => {
    const before = run([submit(0, 1, 2, 3), reg(0, 'w1'), reg(0, 'w2'), poll(0, 'w1', 'a1'), poll(0, 'w2', 'a2')]);
    // Down for 10 lease lengths; restarted at t=10,000 with a grace of 5,000 ms (lease 1,000 ms).
    const restored = initialState(CONFIG, [...before.state.cells.values()], [...before.state.workers.values()], {
      now: 10_000,
      graceMs: 5_000,
    });
    expect(restored.cells.get('c1')!.leaseUntil).toBe(15_000);
    const within = run([{ type: 'tick', now: 14_900 }], restored);
    expect([...within.state.workers.values()].map((w) => w.state)).toEqual(['alive', 'alive']);
    expect(within.actions.filter((a) => a.type === 'attemptEnded')).toEqual([]);
    // w1 comes back late but within the grace and keeps its attempt; w2 never does.
    const r = run(
      [
        { ...reg(14_950, 'w1', [{ cellId: 'c1', attemptId: 'a1', epoch: 3 }]), sessionId: 'new-1' } as SchedulerEvent,
        { type: 'tick', now: 15_100 },
      ],
      within.state,
    );
    expect(r.state.cells.get('c1')).toMatchObject({ state: 'running', attemptId: 'a1', attempts: 1 });
    expect(r.state.cells.get('c2')).toMatchObject({ state: 'pending', attempts: 1 });
    expect(r.state.workers.get('w2')!.state).toBe('lost');
    expect(r.state.workers.get('w1')!.state).toBe('alive');
    // Nothing to recover (a first start, or nothing running and nobody alive): no grace.
    expect(initialState(CONFIG, [], [], { now: 100, graceMs: 5_000 }).recoveringUntil).toBe(0);
    const idle = [...before.state.cells.values()].map((c) => ({ ...c, state: 'done' as const }));
    const gone = [...before.state.workers.values()].map((w) => ({ ...w, state: 'lost' as const }));
    expect(initialState(CONFIG, idle, gone, { now: 100, graceMs: 5_000 }).recoveringUntil).toBe(0);
    // A grace shorter than the lease is the lease.
    expect(
      initialState(CONFIG, [...before.state.cells.values()], [], { now: 100, graceMs: 10 }).cells.get('c1')!.leaseUntil,
    ).toBe(1100);
  });

  test('cancel stops running attempts and retry requeues failed and cancelled cells', () => {
    const r = run([submit(0, 1, 2), reg(0, 'w1'), poll(0, 'w1', 'a1'), { type: 'cancel', now: 1, sweepId: 's' }]);
    expect([...r.state.cells.values()].map((c) => c.state)).toEqual(['cancelled', 'cancelled']);
    expect(r.actions).toContainEqual({ type: 'stopAttempt', workerId: 'w1', attemptId: 'a1' });
    const again = run([{ type: 'retry', now: 2, sweepId: 's' }, poll(3, 'w1', 'a2')], r.state);
    expect(again.state.cells.get('c1')).toMatchObject({ state: 'running', attempts: 1 });
  });

  test('a step never changes the state it was given: every earlier state stays as it was', () => {
    const view = (s: SchedulerState) =>
      JSON.stringify([[...s.cells.entries()], [...s.workers], [...s.byAttempt], [...s.byWorker], s.nextSeq]);
    const events: SchedulerEvent[] = [
      submit(0, 1, 2, 3),
      reg(0, 'w1'),
      reg(0, 'w2'),
      poll(1, 'w1', 'a1'),
      poll(1, 'w2', 'a2'),
      { type: 'epoch', now: 2, attemptId: 'a1', epoch: 1 },
      { type: 'complete', now: 3, attemptId: 'a1' },
      { type: 'fail', now: 3, attemptId: 'a2', message: 'boom', retryable: true },
      submit(4, 4),
      { type: 'tick', now: 5000 },
      { type: 'cancel', now: 5001, sweepId: 's' },
      { type: 'retry', now: 5002, sweepId: 's' },
    ];
    let state = initialState(CONFIG);
    const seen: [SchedulerState, string][] = [];
    for (const e of events) {
      seen.push([state, view(state)]);
      state = step(state, e).state;
    }
    for (const [s, before] of seen) expect(view(s)).toBe(before);
    // Stepping again from an earlier state branches from it, unaffected by what came after.
    const [early] = seen[3]!;
    expect(step(early, poll(1, 'w1', 'b1')).state.cells.get('c1')).toMatchObject({ state: 'running', attemptId: 'b1' });
    expect(state.cells.get('c1')!.state).toBe('done');
    expect([...state.cells.keys()]).toEqual(['c1', 'c2', 'c3', 'c4']);
  });

  test('a cell that names backends goes only to a worker with one of them', () => {
    const gpuOnly = { id: 'g', spec: { ...spec(9), backends: ['tensorflow-gpu', 'webgpu'] } };
    const r = run([
      { type: 'submit', now: 0, sweepId: 's', cells: [gpuOnly, { id: 'c1', spec: spec(1) }] },
      reg(0, 'cpu1'),
      poll(0, 'cpu1', 'a1'),
      { ...reg(0, 'gpu1'), backend: 'webgpu' } as SchedulerEvent,
      poll(0, 'gpu1', 'a2'),
    ]);
    expect(assigned(r.actions)).toEqual(['cpu1:c1', 'gpu1:g']);
  });

  test('a worker whose dataset copy differs is not offered the cell again, and it costs no attempt', () => {
    const r = run([
      submit(0, 1, 2),
      reg(0, 'w1'),
      reg(0, 'w2'),
      poll(0, 'w1', 'a1'),
      { type: 'fail', now: 1, attemptId: 'a1', message: 'mismatch', retryable: true, excludeWorker: true },
      poll(2, 'w1', 'a2'),
      { type: 'complete', now: 3, attemptId: 'a2' },
      poll(4, 'w1', 'a3'),
      poll(5, 'w2', 'a4'),
    ]);
    expect(assigned(r.actions)).toEqual(['w1:c1', 'w1:c2', 'w2:c1']);
    expect(r.state.cells.get('c1')).toMatchObject({
      state: 'running',
      workerId: 'w2',
      attempts: 1,
      excludedWorkers: ['w1'],
    });
    const failed = r.actions.find((a) => a.type === 'saveCell' && a.cell.id === 'c1' && a.cell.error === 'mismatch');
    expect(failed).toMatchObject({ cell: { error: 'mismatch', attempts: 0 } });
  });

  describe('gang assignment (workers: k)', () => {
    test('all or nothing: a gang starts when k workers are idle at once; meanwhile singles backfill', () => {
      const r = run([
        { type: 'submit', now: 0, sweepId: 's', cells: [gang('g', 2), { id: 'c1', spec: spec(1) }] },
        reg(0, 'w1'),
        reg(0, 'w2'),
        poll(0, 'w1', 'a1'), // one idle worker: the gang waits, the single cell backfills
        poll(1, 'w2', 'a2'), // w2 waits: the gang needs two idle workers
        { type: 'complete', now: 2, attemptId: 'a1' },
        poll(3, 'w1', 'a3'), // w1 idle again: the gang forms with w2
        poll(4, 'w2', 'a4'), // w2 (woken) receives its part
      ]);
      expect(assignedRanks(r.actions)).toEqual(['w1:c1#0g1', 'w1:g#0g1', 'w2:g#1g1', 'w2:g#1g1']);
      expect(r.state.cells.get('g')).toMatchObject({
        state: 'running',
        members: ['w1', 'w2'],
        attemptId: 'a3',
        attempts: 1,
      });
    });

    test('after the gang timeout idle workers are held for the gang instead of backfilling', () => {
      const r = run([
        {
          type: 'submit',
          now: 0,
          sweepId: 's',
          cells: [gang('g', 2), { id: 'c1', spec: spec(1) }, { id: 'c2', spec: spec(2) }],
        },
        reg(0, 'w1'),
        reg(0, 'w2'),
        poll(0, 'w1', 'a1'), // backfill c1
        poll(600, 'w2', 'a2'), // gang waited 600 ms > 500 ms: w2 is held, c2 is not started
        { type: 'complete', now: 700, attemptId: 'a1' },
        poll(700, 'w1', 'a3'),
      ]);
      expect(assigned(r.actions)).toEqual(['w1:c1', 'w1:g', 'w2:g']);
      expect(r.state.cells.get('c2')!.state).toBe('pending');
    });

    test('a gang that can never form fails with the reason; a lost rank ends the generation and the group re-forms', () => {
      const alone = run([
        { type: 'submit', now: 0, sweepId: 's', cells: [gang('g', 3)] },
        reg(0, 'w1'),
        poll(0, 'w1', 'a1'),
        { type: 'heartbeat', now: 900, workerId: 'w1', sessionId: 'sess-w1', running: [] },
        { type: 'tick', now: 1001 },
      ]);
      expect(alone.state.cells.get('g')).toMatchObject({
        state: 'failed',
        error: 'needs 3 workers at once (workers: 3); only 1 capable worker(s) alive',
      });

      const formed = run([
        { type: 'submit', now: 0, sweepId: 's', cells: [gang('g', 2)] },
        reg(0, 'w1'),
        reg(0, 'w2'),
        reg(0, 'w3'),
        poll(0, 'w2', 'x'),
        poll(0, 'w1', 'a1'),
      ]);
      expect(formed.state.cells.get('g')!.members).toEqual(['w1', 'w2']);
      // w2 goes silent; w1 keeps heartbeating (so the lease alone would not expire).
      const lost = run(
        [
          {
            type: 'heartbeat',
            now: 800,
            workerId: 'w1',
            sessionId: 'sess-w1',
            running: [{ cellId: 'g', attemptId: 'a1', epoch: 1 }],
          },
          { type: 'heartbeat', now: 800, workerId: 'w3', sessionId: 'sess-w3', running: [] },
          { type: 'tick', now: 1100 },
        ],
        formed.state,
      );
      expect(lost.state.workers.get('w2')!.state).toBe('lost');
      expect(lost.state.cells.get('g')).toMatchObject({
        state: 'pending',
        members: [],
        error: 'rank 1 (worker w2) was lost',
      });
      expect(lost.actions).toContainEqual({ type: 'stopAttempt', workerId: 'w1', attemptId: 'a1' });
      const reformed = run([poll(1200, 'w3', 'y'), poll(1200, 'w1', 'a2')], lost.state);
      expect(assignedRanks(reformed.actions)).toEqual(['w1:g#0g2', 'w3:g#1g2']);
    });

    test('a group that lost a rank and finds no spare re-forms smaller after the gang timeout (a size that divides the batch)', () => {
      const formed = run([
        { type: 'submit', now: 0, sweepId: 's', cells: [gang('g', 4, { batchSize: 32 })] },
        reg(0, 'w1'),
        reg(0, 'w2'),
        reg(0, 'w3'),
        reg(0, 'w4'),
        poll(0, 'w2', 'x'),
        poll(0, 'w3', 'x'),
        poll(0, 'w4', 'x'),
        poll(0, 'w1', 'a1'),
      ]);
      expect(formed.state.cells.get('g')!.members).toHaveLength(4);
      const lost = run(
        [
          ...['w1', 'w2', 'w3'].map(
            (w) =>
              ({
                type: 'heartbeat',
                now: 900,
                workerId: w,
                sessionId: `sess-${w}`,
                running: [{ cellId: 'g', attemptId: 'a1', epoch: 1 }],
              }) as SchedulerEvent,
          ),
          { type: 'tick', now: 1100 },
        ],
        formed.state,
      );
      expect(lost.state.cells.get('g')!.state).toBe('pending');
      // Three workers left: not enough for 4; after the gang timeout the group re-forms with 2
      // (the largest size <= 3 that divides the batch of 32).
      const early = run([poll(1200, 'w2', 'y'), poll(1200, 'w3', 'y'), poll(1201, 'w1', 'a2')], lost.state);
      expect(assignedRanks(early.actions)).toEqual([]);
      const later = run([poll(1800, 'w1', 'a3')], early.state);
      expect(assignedRanks(later.actions)).toEqual(['w1:g#0g2', 'w2:g#1g2']);
    });
  });

  describe("stages (a cell starting from another cell's best weights)", () => {
    // src -> dep1 -> dep2 (a chain of three stages), and an independent cell c9 submitted last.
    const staged: SchedulerEvent = {
      type: 'submit',
      now: 0,
      sweepId: 's',
      cells: [
        { id: 'src', spec: spec(1) },
        { id: 'dep1', spec: { ...spec(1), dataset: 't', weights: 'cell:src' } },
        { id: 'dep2', spec: { ...spec(1), dataset: 'u', weights: 'cell:dep1' } },
        { id: 'c9', spec: spec(9) },
      ],
    };
    const fail = (now: number, attemptId: string): SchedulerEvent => ({
      type: 'fail',
      now,
      attemptId,
      message: 'FERRY_ERR_DATASET: boom',
      retryable: true,
    });
    const states = (st: SchedulerState) => Object.fromEntries([...st.cells.values()].map((c) => [c.id, c.state]));

    test('a dependant is not assigned before its source is done: idle workers take later cells meanwhile, then it starts', () => {
      const r = run([
        staged,
        reg(0, 'w1'),
        reg(0, 'w2'),
        poll(1, 'w1', 'a1'),
        poll(1, 'w2', 'a2'),
        poll(2, 'w2', 'a3'),
      ]);
      // w1: the source; w2: not dep1 (waiting), but c9; w2 polling again holds c9.
      expect(assigned(r.actions)).toEqual(['w1:src', 'w2:c9', 'w2:c9']);
      const idle = run([{ type: 'complete', now: 3, attemptId: 'a2' }, poll(4, 'w2', 'a4')], r.state);
      expect(assigned(idle.actions)).toEqual([]);
      expect(states(idle.state)).toMatchObject({ src: 'running', dep1: 'pending', dep2: 'pending', c9: 'done' });
      const next = run(
        [{ type: 'complete', now: 5, attemptId: 'a1' }, poll(6, 'w2', 'a5'), poll(6, 'w1', 'a6')],
        idle.state,
      );
      // dep1 as soon as src is done; dep2 still waits for dep1.
      expect(assigned(next.actions)).toEqual(['w2:dep1']);
      const last = run([{ type: 'complete', now: 7, attemptId: 'a5' }, poll(8, 'w1', 'a7')], next.state);
      expect(assigned(last.actions)).toEqual(['w1:dep2']);
    });

    test('a source that fails blocks its dependants (the chain too), naming it; they are not failed, never assigned, and the sweep ends', () => {
      const r = run([staged, reg(0, 'w1'), poll(1, 'w1', 'a1'), fail(2, 'a1'), poll(3, 'w1', 'a2'), fail(4, 'a2')]);
      expect(states(r.state)).toEqual({ src: 'failed', dep1: 'blocked', dep2: 'blocked', c9: 'pending' });
      expect(r.state.cells.get('dep1')).toMatchObject({
        attempts: 0,
        error: 'blocked by src (d rgb finetune resnet_tiny seed 1) which failed',
      });
      expect(r.state.cells.get('dep2')!.error).toBe(
        'blocked by dep1 (t rgb finetune resnet_tiny seed 1) which is blocked',
      );
      const end = run(
        [poll(5, 'w1', 'a3'), { type: 'complete', now: 6, attemptId: 'a3' }, poll(7, 'w1', 'a4')],
        r.state,
      );
      expect(assigned(end.actions)).toEqual(['w1:c9']);
      expect(states(end.state)).toEqual({ src: 'failed', dep1: 'blocked', dep2: 'blocked', c9: 'done' });
      // Resubmitting the same sweep changes nothing: blocked cells stay blocked, nothing runs again.
      const again = run([{ ...staged, now: 8 }, poll(9, 'w1', 'a5')], end.state);
      expect(states(again.state)).toEqual(states(end.state));
      expect(assigned(again.actions)).toEqual([]);
    });

    test('retry of the sweep requeues the failed source and unblocks its dependants, which run once it is done', () => {
      const failed = run([
        staged,
        reg(0, 'w1'),
        poll(1, 'w1', 'a1'),
        fail(2, 'a1'),
        poll(3, 'w1', 'a2'),
        fail(4, 'a2'),
      ]);
      const retried = run([{ type: 'retry', now: 5, sweepId: 's' }], failed.state);
      expect(states(retried.state)).toMatchObject({ src: 'pending', dep1: 'pending', dep2: 'pending' });
      expect(retried.state.cells.get('dep1')!.error).toBeNull();
      const r = run(
        [
          poll(6, 'w1', 'a3'),
          { type: 'complete', now: 7, attemptId: 'a3' },
          poll(8, 'w1', 'a4'),
          { type: 'complete', now: 9, attemptId: 'a4' },
          poll(10, 'w1', 'a5'),
        ],
        retried.state,
      );
      expect(assigned(r.actions)).toEqual(['w1:src', 'w1:dep1', 'w1:dep2']);
      // A source cancelled blocks its dependants as well (said so); a retry brings them back.
      const cancelled = run([staged, reg(0, 'w1'), poll(1, 'w1', 'a1')]);
      const c = run([{ type: 'cancel', now: 2, sweepId: 's' }], cancelled.state);
      expect(states(c.state)).toEqual({ src: 'cancelled', dep1: 'cancelled', dep2: 'cancelled', c9: 'cancelled' });
      const other: SchedulerEvent = {
        type: 'submit',
        now: 3,
        sweepId: 'other',
        cells: [{ id: 'dep3', spec: { ...spec(1), dataset: 'v', weights: 'cell:src' } }],
      };
      const blocked = run([other], c.state);
      expect(blocked.state.cells.get('dep3')).toMatchObject({
        state: 'blocked',
        error: 'blocked by src (d rgb finetune resnet_tiny seed 1) which was cancelled',
      });
      const back = run([{ type: 'retry', now: 4, sweepId: 's' }], blocked.state);
      expect(back.state.cells.get('dep3')!.state).toBe('pending');
    });

    test('a coordinator restart keeps dependencies and blocked states: the store gives back blocked, waiting and done cells as they were', () => {
      const file = path.join(mkdtempSync(path.join(tmpdir(), 'ferry-sched-')), 'ferry.sqlite');
      const store = new Store(file);
      let state = initialState(CONFIG);
      const save = (events: SchedulerEvent[]): void => {
        for (const e of events) {
          const r = step(state, e);
          state = r.state;
          for (const a of r.actions) if (a.type === 'saveCell') store.saveCell(a.cell);
        }
      };
      const chain: SchedulerEvent = {
        ...staged,
        cells: [
          ...staged.cells,
          { id: 'ok', spec: spec(2) },
          { id: 'dep4', spec: { ...spec(2), dataset: 't', weights: 'cell:ok' } },
        ],
      };
      save([chain, reg(0, 'w1'), poll(1, 'w1', 'a1'), fail(2, 'a1'), poll(3, 'w1', 'a2'), fail(4, 'a2')]);
      save([poll(5, 'w1', 'a3'), { type: 'complete', now: 6, attemptId: 'a3' }]); // c9
      save([poll(7, 'w1', 'a4')]); // ok: running, dep4 waits for it
      store.close();
      const again = new Store(file);
      const restored = initialState(CONFIG, again.cells(), again.workers(), { now: 100, graceMs: 0 });
      again.close();
      expect(states(restored)).toEqual({
        src: 'failed',
        dep1: 'blocked',
        dep2: 'blocked',
        c9: 'done',
        ok: 'running',
        dep4: 'pending',
      });
      expect(restored.cells.get('dep1')!.error).toContain('blocked by src');
      // dep4 still waits for ok after the restart; once ok is done it runs.
      const r = run(
        [
          { ...reg(101, 'w1', [{ cellId: 'ok', attemptId: 'a4', epoch: 1 }]), sessionId: 'n1' } as SchedulerEvent,
          { ...reg(101, 'w2'), sessionId: 'n2' } as SchedulerEvent,
          { ...poll(102, 'w2', 'a5'), sessionId: 'n2' } as SchedulerEvent,
          { type: 'complete', now: 103, attemptId: 'a4' },
          { ...poll(104, 'w2', 'a6'), sessionId: 'n2' } as SchedulerEvent,
        ],
        restored,
      );
      expect(assigned(r.actions)).toEqual(['w2:dep4']);
      // Retrying after the restart unblocks as before.
      expect(states(run([{ type: 'retry', now: 105, sweepId: 's' }], r.state).state)).toMatchObject({
        src: 'pending',
        dep1: 'pending',
        dep2: 'pending',
      });
    });
  });
});
