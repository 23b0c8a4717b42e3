import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { FERRY_VERSION } from '@ferry/common';
import { writeDemoDataset } from '@ferry/core';
import { adminClient, getSweepAll, unary, type ConnectionOptions } from '@ferry/client';
import type { CellStatus, ListWorkersResponse, SweepStatus } from '@ferry/protocol';
import { REPO_ROOT } from './helpers/torch-ref.js';
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
import { startSlurm, type SlurmCluster } from './helpers/slurm.js';
import { selfSignedCert } from './helpers/tls.js';

/**
 * `ferry run --slurm` against a real Slurm: a one-node cluster of the test's own (slurmctld, slurmd
 * and munged under a temporary folder, test/helpers/slurm.ts). A sweep run entirely through Slurm
 * jobs gives the table `ferry run` gives without Slurm; a job cancelled mid-cell or ended by its
 * time limit is replaced and its cell resumes from its checkpoint; Slurm's refusals are coded
 * errors with Slurm's message, not hangs; nothing stays queued after a run or its Ctrl-C.
 */
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-slurm-run-'));

/** Epochs of the time-limited cell (64 px): about a minute's work for one core. */
const EPOCHS_LONG = 200;

let cluster: SlurmCluster;
let browser: Browser;
let dataRoot = '';

function sweepFile(name: string, epochs: number, colors = '[rgb, gray]', size = 32): string {
  const file = path.join(tmp(), `${name}.yaml`);
  writeFileSync(
    file,
    `name: ${name}
datasets: [{ name: demo, path: demo }]
colors: ${colors}
strategies: [finetune]
models: [resnet_tiny]
hyper: { weights: none, epochs: ${epochs}, batchSize: 16, lr: 0.02, imageSize: ${size} }
`,
  );
  return file;
}

beforeAll(async () => {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
  });
  cluster = await startSlurm();
  dataRoot = tmp();
  await writeDemoDataset(path.join(dataRoot, 'demo'), { trainPerClass: 24, valPerClass: 8, size: 32, seed: 2 });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await cluster?.stop();
}, 60_000);

const runs = new LiveRuns();
afterEach(() => runs.stopAll(20_000), 60_000);

const startRun = (file: string, args: string[]): CliRun =>
  runs.start(
    [file, '--data-root', dataRoot, '--backend', 'wasm', '--no-nats', '--dashboard-port', '0', ...args],
    tmp(),
    {
      ...cluster.env,
      FERRY_CACHE: tmp(),
    },
  );

/** The worker jobs (1 CPU each, so that 2 run at once on the 2-core node), the coordinator on loopback. */
const SLURM = (jobs: number, ...more: string[]): string[] => [
  '--slurm',
  String(jobs),
  '--listen',
  '127.0.0.1:0',
  '--cpus-per-job',
  '1',
  ...more,
];

/** The run's coordinator, with the token the run wrote for its jobs. */
function connection(run: CliRun): ConnectionOptions | undefined {
  const address = loopbackCoordinator(run);
  if (!address) return undefined;
  return { address, token: readFileSync(path.join(run.out, 'slurm', 'token'), 'utf8').trim() };
}

async function admin<T>(run: CliRun, fn: (a: ReturnType<typeof adminClient>, c: ConnectionOptions) => Promise<T>) {
  const conn = connection(run);
  if (!conn) return undefined;
  const a = adminClient(conn);
  try {
    return await fn(a, conn);
  } catch {
    return undefined;
  } finally {
    a.close();
  }
}

const sweepOf = (run: CliRun): Promise<SweepStatus | undefined> =>
  admin(run, async (a, c) => {
    const id = (await unary(a.listSweeps, a, {}, c, 2_000)).sweeps[0]?.sweepId;
    return id ? getSweepAll(a, c, id, { withResults: false, timeoutMs: 2_000 }) : undefined;
  });

const workersOf = (run: CliRun): Promise<ListWorkersResponse | undefined> =>
  admin(run, (a, c) => unary(a.listWorkers, a, {}, c, 2_000));

/** A running cell with 2 epochs checkpointed, and the Slurm job (array task) of the worker running it. */
async function checkpointedCellJob(run: CliRun): Promise<{ cell: CellStatus; job: string }> {
  const cell = await checkpointedCell(() => sweepOf(run), 2, 120_000);
  return { cell, job: /^slurm-(\d+_\d+)$/.exec(cell.worker)![1]! };
}

/** Jobs still queued or running, of any sweep. */
const activeJobs = (): string[] =>
  cluster.queue().filter((l) => /\|(PENDING|RUNNING|CONFIGURING|COMPLETING)\|/.test(l));

async function reference(file: string, workers: number): Promise<RunResults> {
  const run = startRun(file, ['--workers', String(workers)]);
  expect(await run.exited, run.stderr()).toBe(0);
  return runResults(run.out);
}

describe('ferry run --slurm on a real one-node Slurm', () => {
  test('a sweep run entirely through Slurm jobs gives the table of ferry run without Slurm; a queued job shows as queued, with its reason', async () => {
    // Cells of several seconds: the sweep is still running when ferry sweep status looks.
    const file = sweepFile('through-slurm', 20, '[rgb, gray]', 64);
    const want = await reference(file, 2);
    // Three jobs of one CPU on a node of two: the third waits for resources.
    const run = startRun(file, SLURM(3));
    const pending = await waitFor(
      'a queued job on the coordinator, beside the running workers',
      90_000,
      async () => {
        const w = await workersOf(run);
        // (A job's reason is None until the scheduler has looked at it.)
        return w && w.workers.length >= 1 && w.jobs.some((j) => j.state === 'PENDING' && j.reason === 'Resources')
          ? w
          : undefined;
      },
      200,
    );
    // Each worker names its Slurm job and the node it runs on.
    for (const w of pending.workers) {
      expect(w.name).toBe(`slurm-${w.capabilities!.slurmJob}`);
      expect(w.capabilities!.host.split('.')[0]).toBe(cluster.node);
      expect(w.capabilities!.ferryVersion).toBe(FERRY_VERSION);
      expect(pending.jobs.map((j) => j.jobId)).toContain(w.capabilities!.slurmJob);
    }
    // The dashboard (here on the coordinator's own feed, with the token from its file) shows the
    // jobs, the queued one with Slurm's reason, and each worker's job and host.
    const sweepId = (await sweepOf(run))!.sweepId;
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(new URL(`#/sweep/${sweepId}`, /dashboard: (\S+)/.exec(run.stdout())![1]).href);
    await page.waitForSelector('#jobs tr.job-pending', { state: 'attached', timeout: 30_000 });
    const jobRows = await page.$$eval('#jobs tr', (trs) =>
      trs.slice(1).map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent ?? '')),
    );
    expect(jobRows.some((r) => r[1] === 'PENDING' && r[2] === 'Resources')).toBe(true);
    expect(jobRows.filter((r) => r[1] === 'RUNNING').map((r) => r[4])).toEqual(
      expect.arrayContaining([expect.stringMatching(/^slurm-\d+_\d+$/)]),
    );
    const workerRows = await page.$$eval('#workers tr', (trs) =>
      trs.slice(1).map((tr) => Array.from(tr.querySelectorAll('td')).map((td) => td.textContent ?? '')),
    );
    for (const r of workerRows) expect(r[0]).toBe(`slurm-${r[3]}`);
    mkdirSync(path.join(REPO_ROOT, 'test-artifacts'), { recursive: true });
    await page.screenshot({ path: path.join(REPO_ROOT, 'test-artifacts', 'dashboard-slurm.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
    // ferry sweep status shows it as a worker to come, not a missing one.
    const conn = connection(run)!;
    const status = spawn(
      process.execPath,
      [
        FERRY_BIN,
        'sweep',
        'status',
        'through-slurm',
        '--coordinator',
        conn.address,
        '--token-file',
        path.join(run.out, 'slurm', 'token'),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let text = '';
    status.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    status.stderr!.on('data', (d: Buffer) => (text += d.toString()));
    await new Promise((r) => status.on('exit', r));
    expect(text).toMatch(/SLURM JOB/);
    expect(text).toMatch(/\d+_\d+ PENDING \(Resources\)\s+queued/);
    expect(await run.exited, run.stderr()).toBe(0);
    expect(comparable(runResults(run.out))).toEqual(comparable(want));
    expect(run.stderr()).toMatch(/slurm: submitted job (\d+) \(3 worker tasks; 3 of at most 9 submitted\)/);
    expect(run.stderr()).toMatch(/slurm: cancelled job \d+/);
    // Nothing stays queued; the token the jobs read is the user's alone.
    expect(activeJobs()).toEqual([]);
    expect(statSync(path.join(run.out, 'slurm', 'token')).mode & 0o077).toBe(0);
    expect(readFileSync(path.join(run.out, 'slurm', 'worker.sbatch'), 'utf8')).not.toContain(conn.token!);
  }, 300_000);

  test('scancel of a worker job mid-cell: a replacement is submitted, the cell resumes from its checkpoint, same table', async () => {
    // Cells long enough (several seconds each) that work is left when ferry next reads squeue.
    const file = sweepFile('scancelled', 30, '[rgb, gray]', 64);
    const want = await reference(file, 2);
    const run = startRun(file, SLURM(2));
    const { cell: victim, job } = await checkpointedCellJob(run);
    cluster.run('scancel', [job]);
    expect(await run.exited, run.stderr()).toBe(0);
    expect(run.stderr()).toContain(`slurm: job ${job} CANCELLED`);
    expect(run.stderr()).toMatch(
      new RegExp(`slurm: submitted job \\d+ \\(1 worker task, replacing ${job}; 3 of at most 6 submitted\\)`),
    );
    const got = runResults(run.out);
    expect(comparable(got)).toEqual(comparable(want));
    expect(got.cells.find((c) => c.cellId === victim.cellId)!.result.resumedFromEpoch).toBeGreaterThanOrEqual(2);
    expect(activeJobs()).toEqual([]);
  }, 300_000);

  test('a job requeued mid-cell (as preemption with requeue does) runs again as the same worker; the cell resumes; nothing extra submitted', async () => {
    const file = sweepFile('requeued', 30, '[rgb]', 64);
    const run = startRun(file, SLURM(1));
    const { job } = await checkpointedCellJob(run);
    // Requeued and held, so that ferry's poll (every 3 s) surely sees it back in the queue before it
    // runs again; then released (it starts once the cluster's cred_expire, 10 s, has passed). Only
    // what ferry said after the requeue counts (its PENDING at submission is not "back").
    const before = run.stderr().length;
    const after = (): string => run.stderr().slice(before);
    cluster.run('scontrol', ['requeuehold', job]);
    await waitFor('ferry run to see the job back in the queue', 60_000, async () =>
      new RegExp(`slurm: job ${job} (PENDING|REQUEUED|REQUEUE_HOLD|COMPLETING)`).test(after()) ? true : undefined,
    );
    cluster.run('scontrol', ['release', job]);
    expect(await run.exited, run.stderr()).toBe(0);
    // Back in the queue, then running again: the same task, so no replacement is submitted.
    expect(after()).toMatch(
      new RegExp(`slurm: job ${job} (PENDING|REQUEUED|REQUEUE_HOLD|COMPLETING)[^]*slurm: job ${job} RUNNING`),
    );
    expect(run.stderr().match(/slurm: submitted job/g)).toHaveLength(1);
    const cell = runResults(run.out).cells[0]!;
    expect(cell.state).toBe('done');
    expect(cell.result.resumedFromEpoch).toBeGreaterThanOrEqual(2);
    expect(activeJobs()).toEqual([]);
  }, 240_000);

  test('a job that reaches its time limit (SIGTERM first: the worker gives its cell back) is replaced, and the sweep finishes', async () => {
    // One cell long enough to outlast a 30-second job (about a minute on a core).
    const file = sweepFile('time-limited', EPOCHS_LONG, '[rgb]', 64);
    const run = startRun(file, SLURM(1, '--time', '0:30', '--signal-seconds', '10', '--max-submissions', '10'));
    expect(await run.exited, run.stderr()).toBe(0);
    const ended = [...run.stderr().matchAll(/slurm: job (\d+_\d+) (COMPLETED|TIMEOUT)/g)].map((m) => m[1]!);
    expect(ended.length, run.stderr()).toBeGreaterThanOrEqual(1);
    expect(run.stderr()).toContain(`replacing ${ended[0]}`);
    const cell = runResults(run.out).cells[0]!;
    expect(cell.state).toBe('done');
    expect(cell.result.resumedFromEpoch).toBeGreaterThan(0);
    expect(cell.result.epochs).toHaveLength(EPOCHS_LONG);
    expect(activeJobs()).toEqual([]);
  }, 400_000);

  test('off loopback: the coordinator on every interface with TLS, the jobs dialling the advertised name and checking its certificate; without TLS refused', async () => {
    const dir = tmp();
    const { cert, key } = selfSignedCert(dir, 'localhost', ['DNS:localhost', 'IP:127.0.0.1']);
    const file = sweepFile('over-tls', 3, '[rgb]');
    const refused = startRun(file, ['--slurm', '1', '--cpus-per-job', '1']);
    expect(await refused.exited).toBe(2);
    expect(refused.stderr()).toMatch(
      /listens on 0\.0\.0\.0:0 for worker jobs on other nodes: pass --tls-cert and --tls-key/,
    );
    const run = startRun(file, [
      ...['--slurm', '1', '--cpus-per-job', '1', '--listen', '0.0.0.0:0', '--advertise', 'localhost'],
      ...['--tls-cert', cert, '--tls-key', key],
    ]);
    expect(await run.exited, run.stderr()).toBe(0);
    expect(run.stderr()).toMatch(/coordinator localhost:\d+;/);
    expect(runResults(run.out).cells.map((c) => c.state)).toEqual(['done']);
    const script = readFileSync(path.join(run.out, 'slurm', 'worker.sbatch'), 'utf8');
    expect(script).toMatch(/--coordinator localhost:\d+ --token-file \S+ --tls-ca \S+cert\.pem/);
    // The jobs' logs: the worker reached the coordinator over TLS.
    const logs = readdirSync(path.join(run.out, 'logs')).filter((f) => f.startsWith('slurm-'));
    expect(readFileSync(path.join(run.out, 'logs', logs[0]!), 'utf8')).toMatch(/registered with localhost:\d+/);
    expect(activeJobs()).toEqual([]);
  }, 180_000);

  test("a bad partition is FERRY_ERR_SLURM with Slurm's own message, at once", async () => {
    const t0 = Date.now();
    const run = startRun(sweepFile('bad-partition', 1), SLURM(1, '--partition', 'nosuch'));
    expect(await run.exited).toBe(2);
    expect(Date.now() - t0).toBeLessThan(60_000);
    expect(run.stderr()).toMatch(/FERRY_ERR_SLURM/);
    expect(run.stderr()).toMatch(/Slurm refused the worker jobs: .*Invalid partition name specified/s);
    expect(activeJobs()).toEqual([]);
  }, 120_000);

  test("a job that can never start (longer than its partition's limit) is FERRY_ERR_SLURM naming Slurm's reason, not a wait", async () => {
    const run = startRun(sweepFile('too-long', 1), SLURM(1, '--partition', 'short', '--time', '5'));
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toMatch(/FERRY_ERR_SLURM/);
    expect(run.stderr()).toMatch(/PartitionTimeLimit/);
    expect(activeJobs()).toEqual([]);
  }, 120_000);

  test('Ctrl-C cancels every job: nothing stays queued', async () => {
    const run = startRun(sweepFile('interrupted', 30), SLURM(3));
    await waitFor(
      'two jobs running',
      90_000,
      async () => ((await workersOf(run))?.workers.length === 2 ? true : undefined),
      200,
    );
    run.child.kill('SIGINT');
    expect(await run.exited).toBe(130);
    expect(run.stderr()).toMatch(/slurm: cancelled job \d+/);
    await waitFor('the jobs to end', 30_000, async () => (activeJobs().length === 0 ? true : undefined), 250);
  }, 180_000);
});
