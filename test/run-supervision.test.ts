import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, test } from 'vitest';
import { writeDemoDataset } from '@ferry/core';
import { adminClient, getSweepAll, unary } from '@ferry/client';
import type { SweepStatus } from '@ferry/protocol';
import { waitFor } from './helpers/cluster.js';
import {
  FERRY_BIN,
  LiveRuns,
  checkpointedCell,
  comparable,
  loopbackCoordinator,
  runResults,
  type CliRun,
  type RunResults,
} from './helpers/runs.js';

/**
 * `ferry run` supervises its children: kill -9 of a worker (with 1 and with 2 workers), of the
 * coordinator, of nats-server and of the dashboard mid-sweep; each disturbed run must end with the
 * results an undisturbed run of the same command gives (training resumes exactly from checkpoints),
 * with every cell run by one attempt, and the dashboard must show the whole history after it restarts.
 */
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-supervise-'));

/**
 * Epochs per cell: enough for the 1-worker test's kills to land mid-cell (a checkpoint at epoch 2,
 * two more epochs after the worker's restart, then the coordinator's kill with a cell to go).
 */
const EPOCHS = 7;
let dataRoot = '';
let sweepFile = '';

beforeAll(async () => {
  dataRoot = tmp();
  await writeDemoDataset(path.join(dataRoot, 'demo'), { trainPerClass: 24, valPerClass: 8, size: 32, seed: 2 });
  sweepFile = path.join(tmp(), 'supervised.yaml');
  writeFileSync(
    sweepFile,
    `name: supervised
datasets: [{ name: demo, path: demo }]
colors: [rgb, gray]
strategies: [finetune]
models: [resnet_tiny]
hyper: { weights: none, epochs: ${EPOCHS}, batchSize: 16, lr: 0.02, imageSize: 32 }
`,
  );
});

const runs = new LiveRuns();
afterEach(() => runs.stopAll(10_000), 30_000);

const startRun = (out: string, workers: number, extra: string[] = [], env: Record<string, string> = {}): CliRun =>
  runs.start(
    [
      sweepFile,
      '--data-root',
      dataRoot,
      '--backend',
      'wasm',
      '--workers',
      String(workers),
      '--dashboard-port',
      '0',
      ...extra,
    ],
    out,
    { FERRY_CACHE: tmp(), ...env },
  );

type Child = { name: string; kind: string; pid: number | null; restarts: number; log: string };
const children = (out: string): Child[] =>
  (JSON.parse(readFileSync(path.join(out, 'children.json'), 'utf8')) as { children: Child[] }).children;

/** The run's sweep, through its coordinator (undefined while the coordinator is down). */
async function sweep(run: CliRun): Promise<SweepStatus | undefined> {
  const address = loopbackCoordinator(run);
  if (!address) return undefined;
  const conn = { address };
  const admin = adminClient(conn);
  try {
    const list = await unary(admin.listSweeps, admin, {}, conn, 2_000);
    const id = list.sweeps[0]?.sweepId;
    return id ? await getSweepAll(admin, conn, id, { withResults: false, timeoutMs: 2_000 }) : undefined;
  } finally {
    admin.close();
  }
}

/** kill -9 of the named child; resolves once ferry run says it restarted it. */
async function killAndAwaitRestart(run: CliRun, name: string): Promise<void> {
  const c = children(run.out).find((x) => x.name === name)!;
  const before = run.stderr().split(`${name} restarted`).length;
  process.kill(c.pid!, 'SIGKILL');
  await waitFor(
    `${name} to be restarted`,
    60_000,
    async () => (run.stderr().split(`${name} restarted`).length > before ? true : undefined),
    100,
  );
  expect(run.stderr()).toContain(`ferry run: ${name} exited unexpectedly (signal SIGKILL)`);
}

async function undisturbed(workers: number): Promise<RunResults> {
  const run = startRun(tmp(), workers, ['--no-nats']);
  expect(await run.exited, run.stderr()).toBe(0);
  return runResults(run.out);
}

describe('ferry run supervises its children', () => {
  test('1 worker: kill -9 of the worker, then of the coordinator: same results, epochs and attempts as an undisturbed run', async () => {
    const reference = await undisturbed(1);
    const run = startRun(tmp(), 1);
    const first = await checkpointedCell(() => sweep(run), 2, 90_000);
    await killAndAwaitRestart(run, 'worker local-0');
    // The restarted worker claimed its attempt and resumes it from the coordinator's checkpoint.
    await waitFor(
      'the resumed cell to pass another epoch',
      90_000,
      async () => {
        const c = (await sweep(run))?.cells.find((x) => x.cellId === first.cellId);
        return c && (c.state === 'done' || c.epoch >= first.checkpointEpochs + 2) ? true : undefined;
      },
      200,
    );
    await killAndAwaitRestart(run, 'coordinator');
    expect(await run.exited, run.stderr()).toBe(0);
    const got = runResults(run.out);
    expect(comparable(got, { attempts: true })).toEqual(comparable(reference, { attempts: true }));
    expect(got.cells.find((c) => c.cellId === first.cellId)!.result.resumedFromEpoch).toBeGreaterThanOrEqual(2);
    expect(readFileSync(path.join(run.out, 'logs', 'worker-0.log'), 'utf8')).toContain(`resuming attempt`);
    // The crash line names the child's log and quotes its last lines.
    expect(run.stderr()).toMatch(
      /worker local-0 exited unexpectedly \(signal SIGKILL\); restart 1 in 0\.5 s; last lines of \S+worker-0\.log:\n {2}\| /,
    );
    expect(children(run.out).map((c) => [c.name, c.restarts])).toEqual([
      ['nats-server', 0],
      ['coordinator', 1],
      ['dashboard', 0],
      ['worker local-0', 1],
    ]);
  }, 400_000);

  test('2 workers: kill -9 of a busy worker, of nats-server and of the dashboard: same results; afterwards the dashboard shows everything', async () => {
    const reference = await undisturbed(2);
    // --serve: the dashboard stays after the sweep (until SIGINT), so it can be checked afterwards.
    const run = startRun(tmp(), 2, ['--serve']);
    const busy = await checkpointedCell(() => sweep(run), 1, 90_000);
    await killAndAwaitRestart(run, `worker ${busy.worker}`);
    await killAndAwaitRestart(run, 'nats-server');
    await killAndAwaitRestart(run, 'dashboard');
    await waitFor(
      'the results table',
      300_000,
      async () => (/the dashboard stays at/.test(run.stderr()) ? true : undefined),
      250,
    );
    expect(comparable(runResults(run.out), { attempts: true })).toEqual(comparable(reference, { attempts: true }));
    const url = /^dashboard: (\S+)$/m.exec(run.stdout())![1]!;
    // The restarted dashboard replayed the history: both cells done, every epoch once, and the
    // three crashes and restarts (published while NATS or the dashboard itself was down).
    const view = await waitFor(
      'the dashboard to show the history and the restarts',
      60_000,
      async () => {
        const s = (await (await fetch(`${url}api/sweeps`)).json()) as { sweepId: string }[];
        if (s.length !== 1) return undefined;
        const v = (await (await fetch(`${url}api/sweeps/${s[0]!.sweepId}`)).json()) as {
          cells: { cellId: string; state: string }[];
          processes: { name: string; state: string; exit: string }[];
        };
        const events = v.processes.map((p) => `${p.name} ${p.state}`);
        const all = [
          `worker ${busy.worker} crashed`,
          `worker ${busy.worker} restarted`,
          'nats-server crashed',
          'nats-server restarted',
          'dashboard crashed',
          'dashboard restarted',
        ];
        return v.cells.filter((c) => c.state === 'done').length === 2 && all.every((e) => events.includes(e))
          ? v
          : undefined;
      },
      500,
    );
    expect(view.processes.find((p) => p.state === 'crashed')!.exit).toBe('signal SIGKILL');
    for (const c of view.cells) {
      const cell = (await (await fetch(`${url}api/cells/${c.cellId}`)).json()) as {
        curves: { epoch: number; valAccuracy: number }[];
      };
      const want = runResults(run.out).cells.find((x) => x.cellId === c.cellId)!.result.epochs;
      expect(cell.curves.map((e) => [e.epoch, e.valAccuracy])).toEqual(want.map((e) => [e.epoch, e.valAccuracy]));
    }
    run.child.kill('SIGINT');
    expect(await run.exited, run.stderr()).toBe(0);
  }, 500_000);

  test('without nats-server installed the dashboard follows the coordinator during the run, and `ferry dashboard --run DIR` shows the finished run', async () => {
    // FERRY_NATS_SERVER='' is a machine without nats-server (Debian's is in /usr/sbin, which ferry searches besides PATH).
    const run = startRun(tmp(), 1, [], { FERRY_NATS_SERVER: '' });
    const url = await waitFor(
      'the dashboard URL',
      60_000,
      async () => /^dashboard: (\S+)$/m.exec(run.stdout())?.[1],
      100,
    );
    // Live, from the coordinator's event feed: the sweep, its cells, and epoch curves as they come.
    const live = await waitFor(
      'epochs on the live dashboard',
      90_000,
      async () => {
        const sweeps = (await (await fetch(`${url}api/sweeps`)).json()) as { sweepId: string; cells: number }[];
        if (sweeps.length !== 1) return undefined;
        const v = (await (await fetch(`${url}api/sweeps/${sweeps[0]!.sweepId}`)).json()) as {
          cells: { cellId: string; state: string }[];
        };
        for (const c of v.cells) {
          const cell = (await (await fetch(`${url}api/cells/${c.cellId}`)).json()) as { curves: { epoch: number }[] };
          if (cell.curves.length >= 2)
            return { sweepId: sweeps[0]!.sweepId, cells: v.cells.length, curves: cell.curves.map((e) => e.epoch) };
        }
        return undefined;
      },
      300,
    );
    expect(live.cells).toBe(2);
    expect(run.stderr()).toContain(
      'nats-server is not on PATH (or FERRY_NATS_SERVER): the dashboard follows the coordinator',
    );
    expect(live.curves).toEqual([...Array(live.curves.length).keys()]);
    expect(await run.exited, run.stderr()).toBe(0);
    // Afterwards, from the run's folder alone (read-only): every cell, every epoch, the same table.
    const dash = spawn(process.execPath, [FERRY_BIN, 'dashboard', '--run', run.out, '--listen', '127.0.0.1:0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      let text = '';
      dash.stdout!.on('data', (d: Buffer) => (text += d.toString()));
      const again = await waitFor(
        'the run-folder dashboard',
        30_000,
        async () => /^dashboard on (\S+)$/m.exec(text)?.[1],
        100,
      );
      const v = (await (await fetch(`${again}api/sweeps/${live.sweepId}`)).json()) as {
        cells: { cellId: string; state: string; epoch: number }[];
        table: { rows: unknown[] };
      };
      expect(v.cells.map((c) => [c.state, c.epoch])).toEqual([
        ['done', EPOCHS],
        ['done', EPOCHS],
      ]);
      const strip = (rows: unknown[]): unknown =>
        JSON.parse(JSON.stringify(rows, (k, x: unknown) => (/wallMs|imagesPerSec/.test(k) ? undefined : x)));
      expect(strip(v.table.rows)).toEqual(strip(runResults(run.out).table.rows));
    } finally {
      dash.kill('SIGTERM');
    }
    const missing = spawn(process.execPath, [FERRY_BIN, 'dashboard', '--run', tmp()], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let errText = '';
    missing.stderr!.on('data', (d: Buffer) => (errText += d.toString()));
    expect(await new Promise((r) => missing.on('exit', r))).toBe(2);
    expect(errText).toContain("is not a ferry run's output folder (no state/ferry.sqlite)");
  }, 300_000);

  test('a worker that cannot start (its backend is not installed) is restarted until the crash-loop limit, then the run ends with FERRY_ERR_CRASH_LOOP', async () => {
    const out = tmp();
    const child = spawn(
      process.execPath,
      [FERRY_BIN, 'run', sweepFile, '--data-root', dataRoot, '--out', out, '--backend', 'tensorflow', '--no-nats'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t0 = Date.now();
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    expect(code, stderr).toBe(2);
    expect(Date.now() - t0).toBeLessThan(120_000);
    expect(stderr.match(/worker local-0 exited unexpectedly \(exit code 2\)/g)).toHaveLength(5);
    expect(stderr).toContain('worker local-0 kept exiting, so the sweep cannot progress');
    expect(stderr).toContain('FERRY_ERR_BACKEND_UNAVAILABLE');
    expect(stderr).toContain('[FERRY_ERR_CRASH_LOOP]');
    expect(children(out).find((c) => c.kind === 'worker')).toMatchObject({ restarts: 5 });
  }, 180_000);
});
