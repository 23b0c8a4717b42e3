import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { adminClient, ferryErrorFromGrpc, unary, watchCoordinatorEvents, type ConnectionOptions } from '@ferry/client';
import { Coordinator, Store, storeEvents } from '@ferry/coordinator';
import type { AdviceRow, FerryEvent } from '@ferry/protocol';

const SWEEP = `
name: feed
datasets:
  - name: ants
    path: ants
colors: [rgb, gray]
strategies: [finetune]
models: [resnet18]
seeds: [0]
`;

let coord: Coordinator;
let conn: ConnectionOptions;
const state = mkdtempSync(path.join(tmpdir(), 'ferry-services-'));

beforeAll(async () => {
  coord = await Coordinator.create({ listen: '127.0.0.1:0', stateDir: state, token: 'right-token', tickMs: 50 });
  conn = { address: await coord.run(), token: 'right-token' };
});
afterAll(async () => coord.shutdown());

describe('coordinator services through @ferry/client', () => {
  test('the bearer-token interceptor refuses a wrong or missing token on every service before a handler runs', async () => {
    for (const token of ['wrong-token', undefined]) {
      const bad = { address: conn.address, ...(token ? { token } : {}) };
      const admin = adminClient(bad);
      const e = await unary(admin.listSweeps, admin, {}, bad, 5_000).catch((x: unknown) => x);
      expect(ferryErrorFromGrpc(e, conn.address)?.code).toBe('FERRY_ERR_UNAUTHENTICATED');
      admin.close();
    }
    const admin = adminClient(conn);
    expect((await unary(admin.listSweeps, admin, {}, conn, 5_000)).sweeps).toEqual([]);
    admin.close();
  });

  test('Events.Watch: the history, an explicit end of it, then live events', async () => {
    const admin = adminClient(conn);
    const sub = await unary(
      admin.submitSweep,
      admin,
      { yaml: SWEEP, fileName: 'feed.yaml', datasetFingerprints: {}, maxAttempts: 0 },
      conn,
      5_000,
    );
    const seen: FerryEvent[] = [];
    const feed = watchCoordinatorEvents(conn, (e) => seen.push(e));
    await feed.ready;
    // Everything held before the watch began, and nothing of the marker itself.
    expect(seen.filter((e) => e.sweep).map((e) => e.sweep!.name)).toEqual(['feed']);
    expect(seen.filter((e) => e.cell).map((e) => e.cell!.state)).toEqual(['pending', 'pending']);
    expect(seen.some((e) => e.historyEnd)).toBe(false);
    const before = seen.length;
    const n = await unary(
      admin.cancelSweep,
      admin,
      { sweepId: sub.sweepId, offset: 0, limit: 0, withResults: false },
      conn,
      5_000,
    );
    expect(n.count).toBe(2);
    await expect.poll(() => seen.slice(before).filter((e) => e.cell?.state === 'cancelled').length).toBe(2);
    feed.stop();
    admin.close();
  });
});

describe("the advisor's rows (Admin.PutAdvice)", () => {
  const row = (weights: string, winner: string, margin: number): AdviceRow => ({
    dataset: 'ants',
    color: 'rgb',
    model: 'resnet18',
    weights,
    advice: {
      winner,
      marginPoints: margin,
      rangeLow: margin - 3,
      rangeHigh: margin + 3,
      reasons: [],
      note: 'a heuristic',
    },
    measured: 'BatchNorm shift 0.177 (moderate)',
    time: '',
  });

  test('stored per sweep and row key, in GetSweep and on the event feed; kept across a coordinator restart', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-advice-'));
    const start = async (): Promise<[Coordinator, ConnectionOptions]> => {
      const c = await Coordinator.create({ listen: '127.0.0.1:0', stateDir: dir, token: 't', tickMs: 50 });
      return [c, { address: await c.run(), token: 't' }];
    };
    let [c, cn] = await start();
    let admin = adminClient(cn);
    const get = (sweepId: string) =>
      unary(admin.getSweep, admin, { sweepId, offset: 0, limit: 0, withResults: false }, cn, 5_000);
    const { sweepId } = await unary(
      admin.submitSweep,
      admin,
      { yaml: SWEEP, fileName: 'feed.yaml', datasetFingerprints: {}, maxAttempts: 0 },
      cn,
      5_000,
    );
    const seen: FerryEvent[] = [];
    const feed = watchCoordinatorEvents(cn, (e) => seen.push(e));
    await feed.ready;
    const put = (rows: AdviceRow[], id = sweepId) => unary(admin.putAdvice, admin, { sweepId: id, rows }, cn, 5_000);
    expect((await put([row('pretrained', 'freeze', -4), row('cell:abc', 'finetune', 5)])).count).toBe(2);
    // The same key again replaces its row.
    expect((await put([row('pretrained', 'about equal', 0)])).count).toBe(1);
    await expect.poll(() => seen.filter((e) => e.advice).length).toBe(3);
    expect(seen.find((e) => e.advice)).toMatchObject({ sweepId, advice: { weights: 'pretrained' } });
    const wanted = [
      { weights: 'pretrained', advice: { winner: 'about equal', marginPoints: 0 } },
      { weights: 'cell:abc', advice: { winner: 'finetune', marginPoints: 5, rangeLow: 2, rangeHigh: 8 } },
    ];
    expect((await get(sweepId)).advice).toMatchObject(wanted);
    expect((await get(sweepId)).advice[0]!.time).not.toBe('');
    // Refused: an unknown sweep, a row without valid advice; and a wrong token.
    const refused = async (p: Promise<unknown>) =>
      ferryErrorFromGrpc(await p.catch((x: unknown) => x), cn.address)?.code;
    expect(await refused(put([row('none', 'finetune', 5)], 'no-such-sweep'))).toBe('FERRY_ERR_NOT_FOUND');
    expect(await refused(put([row('none', 'maybe', 5)]))).toBe('FERRY_ERR_INVALID_ARGUMENT');
    // More rows than the sweep (2 cells) could have in its table.
    const three = ['none', 'pretrained', 'cell:def'].map((w) => row(w, 'finetune', 5));
    expect(await refused(put(three))).toBe('FERRY_ERR_INVALID_ARGUMENT');
    const bad = { ...cn, token: 'wrong' };
    const badAdmin = adminClient(bad);
    expect(await refused(unary(badAdmin.putAdvice, badAdmin, { sweepId, rows: [] }, bad, 5_000))).toBe(
      'FERRY_ERR_UNAUTHENTICATED',
    );
    badAdmin.close();
    feed.stop();
    admin.close();
    await c.shutdown();

    [c, cn] = await start();
    admin = adminClient(cn);
    expect((await get(sweepId)).advice).toMatchObject(wanted);
    const history: FerryEvent[] = [];
    const again = watchCoordinatorEvents(cn, (e) => history.push(e));
    await again.ready;
    expect(history.filter((e) => e.advice).map((e) => e.advice!.weights)).toEqual(['pretrained', 'cell:abc']);
    again.stop();
    admin.close();
    await c.shutdown();
    // `ferry dashboard --run DIR` replays the same from the store, read-only.
    const ro = new Store(path.join(dir, 'ferry.sqlite'), { readOnly: true });
    expect(storeEvents(ro).filter((e) => e.event.advice)).toHaveLength(2);
    ro.close();
  });
});

describe('store', () => {
  test('results and epochs written by ferry before they were messages (the engine JSON) read as the messages', () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'ferry-store-')), 'ferry.sqlite');
    const store = new Store(file);
    store.close();
    const db = new Database(file);
    db.prepare(
      `INSERT INTO cells (id, spec_json, sweep_ids, state, attempts, max_attempts, lease_until, checkpoint_epochs, epoch, seq, excluded_workers, result_json, updated_at)
       VALUES ('c', '{}', '[]', 'done', 1, 3, 0, 0, 2, 0, '[]', ?, '')`,
    ).run(
      JSON.stringify({
        bestValAccuracy: 0.75,
        bestEpoch: 1,
        confusion: [
          [3, 1],
          [0, 4],
        ],
        epochs: [{ epoch: 1, valAccuracy: 0.75, confusion: [[1]] }],
        valPredictions: [0, 1],
        skipped: [{ file: 'x.png', reason: 'truncated' }],
      }),
    );
    db.prepare("INSERT INTO epochs VALUES ('c', 'a', 1, ?)").run(
      JSON.stringify({
        epoch: 1,
        valAccuracy: 0.75,
        confusion: [
          [2, 0],
          [1, 1],
        ],
      }),
    );
    db.close();
    const again = new Store(file, { readOnly: true });
    const r = again.result('c')!;
    expect(r.bestValAccuracy).toBe(0.75);
    expect(r.confusion).toEqual([{ counts: [3, 1] }, { counts: [0, 4] }]);
    expect(r.epochs[0]!.confusion).toEqual([{ counts: [1] }]);
    expect(r.skipped).toEqual([{ file: 'x.png', reason: 'truncated' }]);
    expect(again.bestValAccuracy('c')).toBe(0.75);
    expect(again.epochs('c')[0]!.metrics.confusion).toEqual([{ counts: [2, 0] }, { counts: [1, 1] }]);
    expect(again.lastValAccuracy('c')).toBe(0.75);
    again.close();
  });
});

describe("the workers' batch jobs (Admin.ReportJobs, ferry run --slurm)", () => {
  test('held as reported and answered by ListWorkers; each new or changed job an event; a late watcher gets them before the history ends', async () => {
    const admin = adminClient(conn);
    const seen: FerryEvent[] = [];
    const feed = watchCoordinatorEvents(conn, (e) => seen.push(e));
    await feed.ready;
    const report = (jobs: { jobId: string; state: string; reason: string; node: string }[]) =>
      unary(admin.reportJobs, admin, { jobs }, conn, 5_000);
    const queued = { jobId: '41_1', state: 'PENDING', reason: 'Resources', node: '' };
    expect((await report([{ jobId: '41_0', state: 'RUNNING', reason: 'None', node: 'gpu1' }, queued])).count).toBe(2);
    await report([{ jobId: '41_0', state: 'RUNNING', reason: 'None', node: 'gpu1' }, queued]); // unchanged
    await report([{ jobId: '41_0', state: 'TIMEOUT', reason: 'TimeLimit', node: 'gpu1' }, queued]);
    await new Promise((r) => setTimeout(r, 200));
    expect(seen.filter((e) => e.job).map((e) => `${e.job!.jobId} ${e.job!.state}`)).toEqual([
      '41_0 RUNNING',
      '41_1 PENDING',
      '41_0 TIMEOUT',
    ]);
    expect(seen.find((e) => e.job)!.sweepId).toBe('_cluster');
    const listed = await unary(admin.listWorkers, admin, {}, conn, 5_000);
    expect(listed.jobs.map((j) => [j.jobId, j.state, j.reason])).toEqual([
      ['41_0', 'TIMEOUT', 'TimeLimit'],
      ['41_1', 'PENDING', 'Resources'],
    ]);
    feed.stop();
    // A dashboard started later: the current jobs come with the history.
    const late: FerryEvent[] = [];
    const again = watchCoordinatorEvents(conn, (e) => late.push(e));
    await again.ready;
    expect(late.filter((e) => e.job).map((e) => e.job!.jobId)).toEqual(['41_0', '41_1']);
    again.stop();
    // A report past the bounds is refused, and the held jobs are kept.
    const e = await report([{ ...queued, reason: 'x'.repeat(300) }]).catch((x: unknown) => x);
    expect(ferryErrorFromGrpc(e, conn.address)?.code).toBe('FERRY_ERR_INVALID_ARGUMENT');
    expect((await unary(admin.listWorkers, admin, {}, conn, 5_000)).jobs).toHaveLength(2);
    await report([]);
    admin.close();
  });
});

describe('store: workers', () => {
  test('a state written before workers had a host, a Slurm job and a version opens with the columns added; they round-trip', () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'ferry-store-')), 'ferry.sqlite');
    const db = new Database(file);
    db.exec(`CREATE TABLE workers (id TEXT PRIMARY KEY, name TEXT NOT NULL, session_id TEXT NOT NULL, backend TEXT NOT NULL,
        device TEXT NOT NULL, last_seen INTEGER NOT NULL, state TEXT NOT NULL, idle_since INTEGER, peer_address TEXT NOT NULL DEFAULT '')`);
    db.prepare("INSERT INTO workers VALUES ('old', 'old-worker', 's', 'wasm', 'cpu', 1, 'alive', NULL, '')").run();
    db.close();
    const store = new Store(file);
    expect(store.workers()).toEqual([
      expect.objectContaining({
        id: 'old',
        name: 'old-worker',
        host: '',
        slurmJob: '',
        ferryVersion: '',
        idleSince: null,
      }),
    ]);
    const w = {
      id: 'new',
      name: 'slurm-41_0',
      sessionId: 's2',
      backend: 'torch',
      device: 'cpu',
      lastSeen: 2,
      state: 'alive' as const,
      idleSince: null,
      peerAddress: '',
      host: 'gpu1',
      slurmJob: '41_0',
      ferryVersion: '0.1.0',
    };
    store.saveWorker(w);
    store.close();
    const again = new Store(file, { readOnly: true });
    expect(again.workers().find((x) => x.id === 'new')).toEqual(w);
    again.close();
  });
});
