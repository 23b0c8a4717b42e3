import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { adminClient, ferryErrorFromGrpc, unary, watchCoordinatorEvents, type ConnectionOptions } from '@ferry/client';
import { Coordinator, Store } from '@ferry/coordinator';
import type { FerryEvent } from '@ferry/protocol';

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
