import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, test } from 'vitest';
import { buildModel, datasetFingerprint, writeDemoDataset } from '@ferry/core';
import { adminClient, coordinatorClient, getSweepAll, metadataFor, unary } from '@ferry/client';
import { CellResult, FileKind, type SweepStatus } from '@ferry/protocol';
import { ferry } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/torch-ref.js';
import { selfSignedCert } from './helpers/tls.js';
import {
  attemptsOf,
  EXPIRY_SLACK_MS,
  epochIndices,
  freePort,
  getSweep,
  kill,
  only,
  outcome,
  startCoordinator,
  startWorker,
  submit,
  waitFor,
  type Proc,
} from './helpers/cluster.js';

/**
 * The cluster with real processes and real gRPC: `ferry coordinator` and `ferry worker` children,
 * killed with SIGKILL / stopped with SIGSTOP mid-sweep.
 */
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-cluster-'));
let dataRoot = '';
const procs: Proc[] = [];
const LEASE_MS = 2000;
const HEARTBEAT_MS = 200;
const FAST = ['--lease-ms', String(LEASE_MS), '--heartbeat-ms', String(HEARTBEAT_MS)];
/** The fault tests' sweep: epochs per cell (few, but enough to kill mid-sweep after 2). */
const EPOCHS = 8;
/** Bounds on the waits the fault tests' timeouts are summed from (2 cores, shared). */
const START_MS = 30_000; // processes started, the sweep submitted, a first epoch under way
const EPOCH_MS = 10_000; // one epoch of one cell
const SWEEP_MS = 120_000; // a whole sweep of EPOCHS epochs, from wherever it is
const OUTAGE_MS = 5_000; // the coordinator's outage: longer than a lease
const STALE_MS = 30_000; // a woken worker's stale attempt refused

const sweepYaml = (name: string, epochs: number, colors = '[rgb, gray]', extra = ''): string => `name: ${name}
datasets: [{ name: demo, path: demo }${extra}]
colors: ${colors}
strategies: [finetune]
models: [resnet_tiny]
hyper: { weights: none, epochs: ${epochs}, batchSize: 16, lr: 0.02, imageSize: 32 }
`;

beforeAll(async () => {
  dataRoot = tmp();
  await writeDemoDataset(path.join(dataRoot, 'demo'), { trainPerClass: 24, valPerClass: 8, size: 32, seed: 2 });
});

afterEach(async () => {
  for (const p of procs.splice(0)) {
    if (p.child.signalCode === null && p.child.exitCode === null) p.child.kill('SIGCONT');
    await kill(p);
  }
});

function worker(address: string, name: string): Proc {
  const p = startWorker(address, { name, dataRoot, workDir: path.join(tmp(), name), cacheDir: tmp() });
  procs.push(p);
  return p;
}

/**
 * `yaml` run undisturbed to its end by a fresh coordinator and fresh workers (`start` for each
 * name): the reference a disturbed run of the same sweep is compared with. Stops its processes.
 */
async function undisturbed(
  yaml: string,
  names: string[],
  coordinatorArgs: string[],
  start: (address: string, name: string) => Proc,
): Promise<{ status: SweepStatus; logs: string }> {
  const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp(), ...coordinatorArgs]);
  procs.push(coord);
  const conn = { address: coord.address };
  const workers = names.map((n) => start(coord.address, n));
  const sweepId = await submit(conn, yaml);
  const status = await waitFor(
    'the undisturbed sweep',
    SWEEP_MS,
    async () => {
      const s = await getSweep(conn, sweepId);
      return s.done + s.failed === s.totalCells ? s : undefined;
    },
    250,
  );
  const logs = workers.map((w) => w.log()).join('');
  for (const p of procs.splice(0)) await kill(p);
  return { status, logs };
}

describe('cluster faults (real processes, real gRPC)', () => {
  /**
   * The undisturbed run every fault below is compared with: the same 2-cell sweep on two workers,
   * once. Each fault test runs this sweep (or its rgb cell) and must end with the same results,
   * epoch histories and, but for the disturbed cell's one extra attempt, the same attempt counts.
   */
  let baseline: SweepStatus;
  beforeAll(async () => {
    baseline = (await undisturbed(sweepYaml('undisturbed', EPOCHS), ['ua', 'ub'], FAST, worker)).status;
    expect(baseline.cells.map((c) => [c.state, c.attempts])).toEqual([
      ['done', 1],
      ['done', 1],
    ]);
    for (const c of baseline.cells) expect(c.result!.resumedFromEpoch).toBe(0);
  }, SWEEP_MS + START_MS);

  // Waits: a checkpoint of 2 epochs (START_MS + 2 epochs), then the sweep (SWEEP_MS); the timeout is their sum.
  test(
    'kill -9 of a worker mid-epoch: its cell resumes from the last checkpoint on another worker; every cell exactly once, with the results of an undisturbed run',
    async () => {
      const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp(), ...FAST]);
      procs.push(coord);
      const conn = { address: coord.address };
      const workers = [worker(coord.address, 'wa'), worker(coord.address, 'wb')];
      const sweepId = await submit(conn, sweepYaml('killworker', EPOCHS));
      const victim = await waitFor('a cell with a checkpoint of 2 epochs', START_MS + 2 * EPOCH_MS, async () => {
        const s = await getSweep(conn, sweepId);
        return s.cells.find((c) => c.state === 'running' && c.checkpointEpochs >= 2);
      });
      const victimProc = victim.worker === 'wa' ? workers[0]! : workers[1]!;
      const survivor = victim.worker === 'wa' ? workers[1]! : workers[0]!;
      await kill(victimProc, 'SIGKILL');
      const done = await waitFor(
        'the sweep to finish',
        SWEEP_MS,
        async () => {
          const s = await getSweep(conn, sweepId);
          return s.done === 2 ? s : undefined;
        },
        250,
      );
      const other = done.cells.find((c) => c.cellId !== victim.cellId)!;
      // The results and every epoch's metrics equal the undisturbed run's (resume is exact).
      expect(outcome(done)).toEqual(outcome(baseline));
      // Every epoch once, in order, in both cells.
      expect(epochIndices(done)).toEqual(epochIndices(baseline));
      for (const ids of Object.values(epochIndices(done))) expect(ids).toEqual([...Array(EPOCHS).keys()]);
      // One attempt more than undisturbed for the killed worker's cell; the other cell ran once.
      expect(attemptsOf(done)).toEqual({ ...attemptsOf(baseline), [victim.cellId]: 2 });
      const moved = done.cells.find((c) => c.cellId === victim.cellId)!;
      expect(moved.worker).toBe('');
      expect(moved.result!.resumedFromEpoch).toBeGreaterThanOrEqual(victim.checkpointEpochs);
      expect(other.result!.resumedFromEpoch).toBe(0);
      // The workers' own account: the other cell was started once, the moved one twice (once per worker).
      const started = (log: string, id: string): number => log.split(`cell ${id} (`).length - 1;
      expect(started(victimProc.log() + survivor.log(), other.cellId)).toBe(1);
      expect([started(victimProc.log(), victim.cellId), started(survivor.log(), victim.cellId)]).toEqual([1, 1]);
    },
    START_MS + 2 * EPOCH_MS + SWEEP_MS,
  );

  // Waits: 2 epochs, the outage (OUTAGE_MS), the sweep (SWEEP_MS); the timeout is their sum.
  test(
    'kill -9 of the coordinator mid-sweep, for longer than a lease, then a restart: the sweep completes with the results of an undisturbed run, nothing lost or duplicated',
    async () => {
      const state = tmp();
      const port = await freePort();
      const listen = ['--listen', `127.0.0.1:${port}`, '--state', state, ...FAST];
      let coord = await startCoordinator(listen);
      procs.push(coord);
      const conn = { address: coord.address };
      worker(coord.address, 'wc');
      const sweepId = await submit(conn, sweepYaml('killcoord', EPOCHS));
      await waitFor('a cell past its second epoch', START_MS + 2 * EPOCH_MS, async () =>
        (await getSweep(conn, sweepId)).cells.find((c) => c.state === 'running' && c.epoch >= 2),
      );
      const down = Date.now();
      await kill(coord, 'SIGKILL');
      // Down for longer than a lease: the restarted coordinator's recovery grace, not the
      // lease, decides how long the worker has to come back and claim its cell.
      await new Promise((r) => setTimeout(r, OUTAGE_MS));
      coord = await startCoordinator(listen);
      const outage = Date.now() - down;
      expect(outage).toBeGreaterThan(LEASE_MS);
      procs.push(coord);
      const done = await waitFor(
        'the sweep to finish after the restart',
        SWEEP_MS,
        async () => {
          const s = await getSweep(conn, sweepId);
          return s.done === 2 ? s : undefined;
        },
        250,
      );
      expect(outcome(done)).toEqual(outcome(baseline));
      // The worker kept its lease across the restart: no second attempt, no duplicate.
      expect(attemptsOf(done)).toEqual(attemptsOf(baseline));
      for (const ids of Object.values(epochIndices(done))) expect(ids).toEqual([...Array(EPOCHS).keys()]);
    },
    START_MS + 2 * EPOCH_MS + OUTAGE_MS + SWEEP_MS,
  );

  test('a cell that fails every time ends failed after the configured attempts, with its error; the other cell completes', async () => {
    const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp(), ...FAST, '--max-attempts', '2']);
    procs.push(coord);
    const conn = { address: coord.address };
    worker(coord.address, 'wd');
    // A dataset whose train/ has no val/ next to it: fails the same way on every worker.
    execFileSync('mkdir', ['-p', path.join(dataRoot, 'broken', 'train', 'a')]);
    const yaml = `name: failing
datasets: [{ name: demo, path: demo }, { name: ghost, path: broken }]
colors: [rgb]
strategies: [finetune]
models: [resnet_tiny]
hyper: { weights: none, epochs: 2, batchSize: 16, lr: 0.02, imageSize: 32 }
`;
    const sweepId = await submit(conn, yaml);
    const s = await waitFor(
      'both cells to end',
      90_000,
      async () => {
        const x = await getSweep(conn, sweepId);
        return x.done + x.failed === 2 ? x : undefined;
      },
      250,
    );
    const ghost = s.cells.find((c) => c.spec!.dataset === 'ghost')!;
    expect(ghost).toMatchObject({ state: 'failed', attempts: 2 });
    expect(ghost.error).toContain('FERRY_ERR_DATASET');
    expect(ghost.error).toContain('has train/ but no val/');
    expect(s.cells.find((c) => c.spec!.dataset === 'demo')!.state).toBe('done');
  });

  // Waits: an epoch, the lease's expiry (bounded below), the sweep (SWEEP_MS), the stale attempt's
  // refusal (STALE_MS); the timeout is their sum.
  test(
    'a worker that stops heartbeating without dying (SIGSTOP) loses its lease when the lease runs out and the cell moves; woken, its stale attempt is refused and changes nothing',
    async () => {
      const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp(), ...FAST]);
      procs.push(coord);
      const conn = { address: coord.address };
      const a = worker(coord.address, 'we');
      const sweepId = await submit(conn, sweepYaml('hung', EPOCHS, '[rgb]'));
      const cell = await waitFor('a checkpoint of the cell', START_MS + EPOCH_MS, async () =>
        (await getSweep(conn, sweepId)).cells.find((c) => c.state === 'running' && c.checkpointEpochs >= 1),
      );
      expect(cell.worker).toBe('we');
      const stopped = Date.now();
      a.child.kill('SIGSTOP');
      worker(coord.address, 'wf');
      // The lease was last renewed at most a heartbeat before the stop; the coordinator checks
      // leases every TICK_MS. So the attempt ends between the lease (less a few late heartbeats)
      // and the lease plus a tick (plus the time to ask), not before, not much later.
      const lost = await waitFor(
        'the lease to expire',
        LEASE_MS + EXPIRY_SLACK_MS + 10_000,
        async () => {
          const c = (await getSweep(conn, sweepId)).cells[0]!;
          return c.state !== 'running' || c.worker !== 'we' || c.attempts > 1 ? Date.now() - stopped : undefined;
        },
        50,
      );
      expect(lost).toBeGreaterThanOrEqual(LEASE_MS - 5 * HEARTBEAT_MS);
      expect(lost).toBeLessThanOrEqual(LEASE_MS + EXPIRY_SLACK_MS);
      const done = await waitFor(
        'the cell to finish elsewhere',
        SWEEP_MS,
        async () => {
          const s = await getSweep(conn, sweepId);
          return s.done === 1 ? s : undefined;
        },
        250,
      );
      expect(attemptsOf(done)).toEqual({ [cell.cellId]: 2 });
      // The stopped worker wakes up: its first heartbeat claims the lost attempt; the coordinator
      // refuses it and the worker stops it (or, had it finished, its result is not recorded).
      a.child.kill('SIGCONT');
      const refused = await waitFor(
        'the stale attempt to be refused',
        STALE_MS,
        async () =>
          new RegExp(`cell ${cell.cellId}: (stopped \\(cancelled by the coordinator\\)|.*\\(not recorded: )`).exec(
            a.log(),
          )?.[0],
        100,
      );
      expect(refused).toBeTruthy();
      const after = await getSweep(conn, sweepId);
      expect(outcome(after)).toEqual(outcome(done));
      expect(outcome(after)).toEqual(outcome(only(baseline, [cell.cellId])));
      expect(attemptsOf(after)).toEqual({ [cell.cellId]: 2 });
      expect(epochIndices(after)).toEqual({ [cell.cellId]: [...Array(EPOCHS).keys()] });
      expect(after.cells[0]!.result!.resumedFromEpoch).toBeGreaterThanOrEqual(cell.checkpointEpochs);
    },
    START_MS + EPOCH_MS + LEASE_MS + EXPIRY_SLACK_MS + 10_000 + SWEEP_MS + STALE_MS,
  );
});

describe('cluster security', () => {
  test('a token-protected coordinator rejects unauthenticated calls', async () => {
    const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp(), '--token', 's3cret']);
    procs.push(coord);
    const anon = { address: coord.address };
    await expect(getSweep(anon, 'x')).rejects.toMatchObject({ code: 16 }); // UNAUTHENTICATED
    await expect(getSweep({ address: coord.address, token: 'wrong' }, 'x')).rejects.toMatchObject({ code: 16 });
    await expect(getSweep({ address: coord.address, token: 's3cret' }, 'x')).rejects.toMatchObject({ code: 5 }); // NOT_FOUND: authenticated
  });

  test('a non-loopback bind needs TLS and a token, or --insecure; with TLS and token calls succeed', async () => {
    await expect(startCoordinator(['--listen', '0.0.0.0:0', '--state', tmp()])).rejects.toThrow(
      /needs --tls-cert\/--tls-key and --token, or an explicit --insecure/,
    );
    const dir = tmp();
    const { key, cert } = selfSignedCert(dir, 'localhost', ['DNS:localhost', 'IP:127.0.0.1']);
    const coord = await startCoordinator([
      '--listen',
      '0.0.0.0:0',
      '--state',
      tmp(),
      '--tls-cert',
      cert,
      '--tls-key',
      key,
      '--token',
      'tok',
    ]);
    procs.push(coord);
    const port = coord.address.split(':').at(-1);
    const tls = { address: `localhost:${port}`, tls: { ca: cert }, token: 'tok' };
    const admin = adminClient(tls);
    const list = await unary(admin.listSweeps, admin, {}, tls, 5_000);
    admin.close();
    expect(list.sweeps).toEqual([]);
    await expect(getSweep({ address: `localhost:${port}`, tls: { ca: cert } }, 'x')).rejects.toMatchObject({
      code: 16,
    });
    // Plain text to a TLS port fails.
    await expect(getSweep({ address: `127.0.0.1:${port}`, token: 'tok' }, 'x')).rejects.toMatchObject({ code: 14 });
  });
});

describe('ferry sweep (CLI against a real coordinator)', () => {
  test('submit, status, cancel, retry, results', async () => {
    const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp(), ...FAST]);
    procs.push(coord);
    const c = ['--coordinator', coord.address];
    const file = path.join(tmp(), 's.yaml');
    writeFileSync(file, sweepYaml('cli', 2));
    const sub = await ferry(['sweep', 'submit', file, '--data-root', dataRoot, ...c]);
    expect(sub.code).toBe(0);
    expect(sub.stdout).toMatch(/^sweep cli-[0-9a-f]{8}: 2 cells \(2 new\)/);
    const again = await ferry(['sweep', 'submit', file, ...c]);
    expect(again.stdout).toMatch(/2 cells \(0 new\)/);
    const status = await ferry(['sweep', 'status', 'cli', ...c]);
    expect(status.stdout).toMatch(/0 done, 0 running, 2 pending/);
    expect((await ferry(['sweep', 'cancel', 'cli', ...c])).stdout).toContain('cancelled 2 cell(s)');
    expect((await ferry(['sweep', 'retry', 'cli', ...c])).stdout).toContain('requeued 2 cell(s)');
    worker(coord.address, 'wg');
    await waitFor(
      'the sweep',
      90_000,
      async () => ((await ferry(['sweep', 'status', 'cli', ...c])).stdout.includes('2 done') ? true : undefined),
      300,
    );
    const csv = await ferry(['sweep', 'results', 'cli', '--format', 'csv', ...c]);
    expect(csv.stdout.split('\n')[0]).toContain('finetune_mean');
    expect(csv.stdout.split('\n').filter((l) => l.startsWith('demo,'))).toHaveLength(2);
    const missing = await ferry(['sweep', 'status', 'nope', ...c]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no sweep nope');
  });
});

describe('coordinator protocol edges', () => {
  test('a 10,000-cell sweep (the limit): submitted, its status and results answered in pages, every cell once, in order', async () => {
    const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp()]);
    procs.push(coord);
    const conn = { address: coord.address };
    const datasets = Array.from({ length: 10 }, (_, i) => `{ name: d${i}, path: d${i} }`).join(', ');
    const yaml = `name: big\ndatasets: [${datasets}]\ncolors: [rgb, gray]\nstrategies: [finetune, freeze, probe, adapt, freezeUntil:layer3]\nmodels: [resnet_tiny]\nseeds: [${[...Array(100).keys()].join(', ')}]\n`;
    const sweepId = await submit(conn, yaml);
    const admin = adminClient(conn);
    try {
      const ids: string[] = [];
      let offset = 0;
      let pages = 0;
      do {
        const page = await unary(
          admin.getSweep,
          admin,
          { sweepId, offset, limit: 3_000, withResults: false },
          conn,
          10_000,
        );
        expect(page).toMatchObject({ totalCells: 10_000, pending: 10_000 });
        ids.push(...page.cells.map((c) => c.cellId));
        offset = page.nextOffset;
        pages++;
      } while (offset > 0);
      expect(pages).toBe(4);
      expect(new Set(ids).size).toBe(10_000);
      // The whole sweep through the client's pager equals the pages, in submission order.
      expect((await getSweepAll(admin, conn, sweepId, { withResults: true })).cells.map((c) => c.cellId)).toEqual(ids);
    } finally {
      admin.close();
    }
    const status = await ferry(['sweep', 'status', sweepId, '--coordinator', coord.address]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain('0 done, 0 running, 10000 pending');
    expect(status.stdout.trim().split('\n')).toHaveLength(10_002);
    const results = await ferry(['sweep', 'results', sweepId, '--coordinator', coord.address]);
    expect(results.code, results.stderr).toBe(0);
    expect(results.stderr).toContain('note: 10000 of 10000 cells are not done');
  });

  test('a long poll with no work answers "no assignment" after its wait, not an error', async () => {
    const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp()]);
    procs.push(coord);
    const conn = { address: coord.address };
    const client = coordinatorClient(conn);
    const reg = await unary(client.register, client, { workerId: 'w-edge', name: 'edge', running: [] }, conn, 5_000);
    const t0 = Date.now();
    const a = await unary(
      client.poll,
      client,
      { workerId: 'w-edge', sessionId: reg.sessionId, waitMs: 300 },
      conn,
      5_000,
    );
    expect(a.hasAssignment).toBe(false);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    const stale = await unary(
      client.complete,
      client,
      { attemptId: 'nope', result: CellResult.fromPartial({}) },
      conn,
      5_000,
    );
    expect(stale).toEqual({ ok: false, message: 'attempt is not leased; result not recorded' });
    client.close();
  });
});

describe('checkpoint uploads are checked before they replace anything', () => {
  test('offsets must follow each other, the total is capped, an idle stream is cut, and the file must be a ferry checkpoint; the coordinator keeps serving', async () => {
    const state = tmp();
    const coord = await startCoordinator([
      '--listen',
      '127.0.0.1:0',
      '--state',
      state,
      '--max-checkpoint-mb',
      '1',
      '--checkpoint-idle-ms',
      '500',
    ]);
    procs.push(coord);
    const conn = { address: coord.address };
    const sweepId = await submit(conn, sweepYaml('ckpt', 2, '[rgb]'));
    const client = coordinatorClient(conn);
    const reg = await unary(client.register, client, { workerId: 'w-ckpt', name: 'ckpt', running: [] }, conn, 5_000);
    const a = await unary(
      client.poll,
      client,
      { workerId: 'w-ckpt', sessionId: reg.sessionId, waitMs: 2_000 },
      conn,
      5_000,
    );
    expect(a.hasAssignment).toBe(true);
    type Chunk = { offset: number; data: Buffer; last?: boolean; sha256?: string };
    const upload = (
      chunks: Chunk[],
      hold = 0,
    ): Promise<{ ok: boolean; message: string } | { code: number; details: string }> =>
      new Promise((resolve) => {
        const s = client.uploadCheckpoint(metadataFor(conn), (e, r) =>
          resolve(e ? { code: e.code, details: e.details } : r!),
        );
        s.on('error', () => undefined);
        for (const c of chunks)
          s.write({
            attemptId: a.attemptId,
            cellId: a.cellId,
            epochsDone: 1,
            kind: FileKind.FILE_KIND_CHECKPOINT,
            offset: c.offset,
            data: c.data,
            last: c.last ?? false,
            sha256: c.sha256 ?? '',
            totalBytes: 0,
          });
        if (hold) setTimeout(() => s.end(), hold);
        else s.end();
      });
    const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    const last = path.join(state, 'checkpoints', a.cellId, 'last.safetensors');
    const bytes = Buffer.alloc(1000, 7);
    expect(await upload([{ offset: 2 ** 40, data: bytes, last: true, sha256: sha(bytes) }])).toMatchObject({
      ok: false,
      message: expect.stringContaining('the next byte expected is 0'),
    });
    expect(
      await upload([
        { offset: 0, data: bytes },
        { offset: 500, data: bytes, last: true, sha256: sha(bytes) },
      ]),
    ).toMatchObject({
      ok: false,
      message: expect.stringContaining('chunk at offset 500; the next byte expected is 1000'),
    });
    const big = Buffer.alloc(600_000);
    expect(
      await upload([
        { offset: 0, data: big },
        { offset: 600_000, data: big, last: true },
      ]),
    ).toMatchObject({ ok: false, message: expect.stringContaining('larger than the 1048576-byte limit') });
    expect(await upload([{ offset: 0, data: bytes }])).toMatchObject({
      ok: false,
      message: expect.stringContaining('without its last chunk'),
    });
    expect(await upload([{ offset: 0, data: bytes, last: true, sha256: sha(bytes) }])).toMatchObject({
      ok: false,
      message: expect.stringContaining('not a ferry checkpoint'),
    });
    const idle = await upload([{ offset: 0, data: bytes }], 1_500);
    expect(idle).toMatchObject({ code: 4, details: expect.stringContaining('idle for 500 ms') }); // DEADLINE_EXCEEDED
    // Nothing was accepted, no temporary file is left, and the coordinator still answers.
    expect(existsSync(last)).toBe(false);
    expect(readdirSync(path.dirname(last)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect((await getSweep(conn, sweepId)).cells).toHaveLength(1);
    // A real checkpoint (ferry's own format) is accepted and replaces nothing but the last one.
    const { writeSafetensors, CHECKPOINT_FORMAT } = await import('@ferry/core');
    const good = writeSafetensors(new Map([['w', { dtype: 'float32', shape: [2], data: Float32Array.from([1, 2]) }]]), {
      ferry: JSON.stringify({ format: CHECKPOINT_FORMAT }),
    });
    expect(
      await upload([
        { offset: 0, data: good.subarray(0, 20) },
        { offset: 20, data: good.subarray(20), last: true, sha256: sha(good) },
      ]),
    ).toEqual({ ok: true, message: '' });
    expect(readFileSync(last).equals(good)).toBe(true);
    client.close();
  });
});

describe('datasets and the embedded default', () => {
  test("a worker whose copy of the dataset differs reports it and the cell runs on a worker with the sweep's copy", async () => {
    const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp(), ...FAST]);
    procs.push(coord);
    const conn = { address: coord.address };
    const yaml = sweepYaml('fingerprint', 2, '[rgb]');
    // The submitter pins the fingerprint of the real copy.
    const admin = adminClient(conn);
    const sub = await unary(
      admin.submitSweep,
      admin,
      {
        yaml,
        fileName: 'f.yaml',
        datasetFingerprints: { demo: (await datasetFingerprint(path.join(dataRoot, 'demo'))).fingerprint },
        maxAttempts: 3,
      },
      conn,
      5_000,
    );
    admin.close();
    // A worker with a different copy (one image fewer) starts first.
    const otherRoot = tmp();
    execFileSync('cp', ['-r', path.join(dataRoot, 'demo'), path.join(otherRoot, 'demo')]);
    execFileSync('sh', ['-c', `rm "$(ls -d ${path.join(otherRoot, 'demo', 'train', 'red_circle')}/* | head -1)"`]);
    const stale = startWorker(coord.address, { name: 'stale', dataRoot: otherRoot, workDir: tmp(), cacheDir: tmp() });
    procs.push(stale);
    const s1 = await waitFor('the mismatch to be reported', 60_000, async () => {
      const s = await getSweep(conn, sub.sweepId);
      return s.cells[0]!.error.includes('FERRY_ERR_DATASET_MISMATCH') ? s : undefined;
    });
    expect(s1.cells[0]!.error).toMatch(/differs from the sweep's copy/);
    await kill(stale);
    worker(coord.address, 'good');
    const done = await waitFor(
      'the cell on the good worker',
      60_000,
      async () => {
        const s = await getSweep(conn, sub.sweepId);
        return s.done === 1 ? s : undefined;
      },
      250,
    );
    // The mismatch did not use up an attempt.
    expect(done.cells[0]!.attempts).toBe(1);
  });

  test('Ctrl-C stops ferry run and all its children; running it again resumes and finishes', async () => {
    const out = tmp();
    const sweepFile = path.join(tmp(), 'ctrlc.yaml');
    writeFileSync(sweepFile, sweepYaml('ctrlc', 6, '[rgb, gray]'));
    const bin = path.join(REPO_ROOT, 'packages/cli/bin/ferry.js');
    const args = [
      bin,
      'run',
      sweepFile,
      '--data-root',
      dataRoot,
      '--out',
      out,
      '--backend',
      'wasm',
      '--workers',
      '1',
      '--dashboard-port',
      '0',
    ];
    const first = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FERRY_CACHE: tmp() },
    });
    let err = '';
    first.stderr.on('data', (d: Buffer) => (err += d.toString()));
    await waitFor('a cell to be running', 60_000, async () => (/1 running/.test(err) ? true : undefined), 200);
    first.kill('SIGINT');
    const code = await new Promise<number | null>((r) => first.on('exit', (c) => r(c)));
    expect(code).toBe(130);
    const leftovers = (() => {
      try {
        return execFileSync('pgrep', ['-f', out], { encoding: 'utf8' }).trim();
      } catch (e) {
        // pgrep exits 1 when nothing matches; anything else (not installed, bad pattern) must not pass as "none left".
        if ((e as { status?: number }).status === 1) return '';
        throw e;
      }
    })();
    expect(leftovers).toBe('');
    const second = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FERRY_CACHE: tmp() },
    });
    let stdout = '';
    second.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    expect(await new Promise<number | null>((r) => second.on('exit', (c) => r(c)))).toBe(0);
    expect(stdout).toMatch(/\| demo \| rgb \|/);
    expect(stdout).toMatch(/\| demo \| gray \|/);
  });
});

describe('data-parallel cells over real processes', () => {
  /** The ring's collective deadline, and a lease well past it plus the abort's margin (below). */
  const DEADLINE_MS = 2_000;
  const DP_LEASE_MS = 8_000;
  /**
   * From the kill to the generation's end, besides the deadline itself: the training step a rank
   * may be in when its peer dies (before it waits on the ring) and its fail report. Deadline plus
   * margin is under the lease, so a generation ended by the lease instead of the ring fails the test.
   */
  const ABORT_MARGIN_MS = 1_500;
  const DP_EPOCHS = 6;
  const DP_ARGS = ['--lease-ms', String(DP_LEASE_MS), '--heartbeat-ms', String(HEARTBEAT_MS)];
  const dpYaml = (name: string, epochs: number): string => `name: ${name}
datasets: [{ name: demo, path: demo }]
colors: [rgb]
strategies: [finetune]
models: [resnet_tiny]
hyper: { weights: none, epochs: ${epochs}, batchSize: 16, lr: 0.02, imageSize: 32, workers: 2 }
`;
  const dpWorker = (address: string, name: string): Proc => {
    const p = startWorker(address, {
      name,
      dataRoot,
      workDir: tmp(),
      cacheDir: tmp(),
      extra: ['--collective-deadline-ms', String(DEADLINE_MS)],
    });
    procs.push(p);
    return p;
  };

  /** The undisturbed data-parallel run (the first test's subject, the rank-kill test's reference). */
  let baseline: { status: SweepStatus; logs: string };
  beforeAll(async () => {
    baseline = await undisturbed(dpYaml('dp', DP_EPOCHS), ['dpa', 'dpb'], DP_ARGS, dpWorker);
  }, SWEEP_MS + START_MS);

  test('a workers: 2 cell trains on two workers (ranks 0 and 1) and reports once', () => {
    const [cell] = baseline.status.cells;
    expect(cell).toMatchObject({ state: 'done', attempts: 1 });
    expect(epochIndices(baseline.status)).toEqual({ [cell!.cellId]: [...Array(DP_EPOCHS).keys()] });
    expect(baseline.logs).toContain('rank 0 of 2 (generation 1)');
    expect(baseline.logs).toContain('rank 1 of 2 (generation 1)');
    expect(baseline.logs.match(/best val/g)).toHaveLength(1);
    // Each rank says, every epoch, where its steps' time went; the all-reduce summed resnet_tiny's
    // gradients and the step's 3 counts, in float32.
    const shares = [
      ...baseline.logs.matchAll(
        /epoch (\d+) \(rank (\d) of 2\): (\d+) steps, compute \d+ ms and gradient all-reduce \d+ ms a step \((\d+)% of the step, ([\d.]+) MB\)/g,
      ),
    ];
    expect(shares).toHaveLength(2 * DP_EPOCHS);
    const params = buildModel('resnet_tiny', 2).params.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
    for (const m of shares) {
      expect(Number(m[3])).toBeGreaterThan(0);
      expect(Number(m[4])).toBeLessThanOrEqual(100);
      expect(Number(m[5])).toBeCloseTo((4 * (params + 3)) / 1e6, 1);
    }
  });

  // Waits: a checkpoint of 2 epochs, the abort (DEADLINE_MS + ABORT_MARGIN_MS, asked for 10 s
  // longer so that a slow abort fails on its time, not the wait), the sweep; the timeout is their sum.
  test(
    'kill -9 of one rank: the generation aborts within the deadline, the group re-forms at full size with a spare worker and resumes, with the result of an undisturbed run',
    async () => {
      const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp(), ...DP_ARGS]);
      procs.push(coord);
      const conn = { address: coord.address };
      const workers = [dpWorker(coord.address, 'dp1'), dpWorker(coord.address, 'dp2')];
      const sweepId = await submit(conn, dpYaml('dpkill', DP_EPOCHS));
      const running = await waitFor('a checkpoint of the group', START_MS + 2 * EPOCH_MS, async () =>
        (await getSweep(conn, sweepId)).cells.find((c) => c.state === 'running' && c.checkpointEpochs >= 2),
      );
      expect(running.attempts).toBe(1);
      // Kill the rank that is not rank 0 (rank 0 is the one the coordinator lists).
      const [victim, survivor] = running.worker === 'dp1' ? [workers[1]!, workers[0]!] : [workers[0]!, workers[1]!];
      const killed = Date.now();
      await kill(victim, 'SIGKILL');
      const spare = dpWorker(coord.address, 'dp3');
      // The generation's end, as the coordinator records it: the attempt over (pending, or the next one running).
      const aborted = await waitFor(
        'the generation to abort',
        DEADLINE_MS + ABORT_MARGIN_MS + 10_000,
        async () => {
          const c = (await getSweep(conn, sweepId)).cells[0]!;
          return c.state !== 'running' || c.attempts > 1 ? Date.now() - killed : undefined;
        },
        50,
      );
      expect(aborted).toBeLessThanOrEqual(DEADLINE_MS + ABORT_MARGIN_MS);
      // Ended by the ring's deadline on the surviving rank, not by the coordinator noticing the loss.
      expect(survivor.log()).toMatch(
        new RegExp(`cell ${running.cellId} failed: FERRY_ERR_COLLECTIVE: .*within ${DEADLINE_MS} ms`),
      );
      const done = await waitFor(
        'the re-formed group to finish',
        SWEEP_MS,
        async () => {
          const s = await getSweep(conn, sweepId);
          return s.done === 1 ? s : undefined;
        },
        250,
      );
      // Generation 2 at full size: rank 0 and rank 1 of 2, on the surviving and the spare worker.
      const gen2 = (p: Proc): string | undefined =>
        /rank (\d) of (\d) \(generation 2\)/.exec(p.log())?.slice(1).join(' of ');
      expect([gen2(survivor), gen2(spare)].sort()).toEqual(['0 of 2', '1 of 2']);
      expect(victim.log()).not.toContain('(generation 2)');
      expect(outcome(done)).toEqual(outcome(baseline.status));
      expect(attemptsOf(done)).toEqual({ [running.cellId]: 2 });
      expect(epochIndices(done)).toEqual({ [running.cellId]: [...Array(DP_EPOCHS).keys()] });
      expect(done.cells[0]!.result!.resumedFromEpoch).toBeGreaterThanOrEqual(2);
    },
    START_MS + 2 * EPOCH_MS + DEADLINE_MS + ABORT_MARGIN_MS + 10_000 + SWEEP_MS,
  );
});
