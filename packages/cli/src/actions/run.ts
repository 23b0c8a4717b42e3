import { mkdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { constants, accessSync } from 'node:fs';
import { createServer } from 'node:net';
import writeFileAtomic from 'write-file-atomic';
import { parseSweep } from '@ferry/coordinator';
import {
  FerryError,
  isErrorCode,
  resultsTable,
  sourceCellOf,
  tableCsv,
  tableMarkdown,
  waitingForSource,
} from '@ferry/common';
import { InvalidArgumentError } from '@ferry/core';
import { EventPublisher } from '@ferry/events';
import { FerryEvent, SUBJECTS, type AdminClient, type CellResult, type SweepStatus } from '@ferry/protocol';
import { adminClient, getSweepAll, unary, type ConnectionOptions } from '@ferry/client';
import { err, out, type CliIo } from '../io.js';
import { RunProgress, cellLabel } from '../progress.js';
import { Supervisor, lastLinesText, type ChildSpec, type Supervised, type SupervisorEvent } from '../supervisor.js';
import { outcomes, reportCells, sweepAdvice } from '../sweep-results.js';
import { RunAdvisor } from './run-advice.js';
import { resultsHtml } from '../report.js';
import { defaultCacheDir, ferryBin } from '../paths.js';
import {
  LOCAL_REACH,
  clientConnection,
  coordinatorReachArgs,
  slurmPlan,
  slurmReach,
  startSlurmWorkers,
  type CoordinatorReach,
  type RunWorkers,
  type SlurmPlan,
  type SlurmRunFlags,
} from './run-slurm.js';

/** How long pending cells with an error may wait with nothing running before `ferry run` gives up on them. */
const STALL_MS = 15_000;

export interface RunFlags extends SlurmRunFlags {
  readonly workers: number;
  /** Whether --workers was given (it and --slurm exclude each other). */
  readonly workersGiven: boolean;
  readonly dataRoot: string;
  readonly out?: string;
  readonly backend: string;
  /** commander's --nats and --no-nats: a URL, true (the default: FERRY_NATS or our own) or false. */
  readonly nats?: string | boolean;
  readonly dashboardPort: number;
  readonly serve: boolean;
  readonly alpha: number;
  /** commander's --no-advise: false skips the advisor's predictions (default true). */
  readonly advise?: boolean;
}

/** `nats-server` from PATH (Debian installs it in /usr/sbin, often not on a user's PATH). */
export function findExecutable(name: string, env: Readonly<Record<string, string | undefined>>): string | undefined {
  const dirs = [...(env['PATH'] ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/usr/local/bin'];
  for (const d of dirs) {
    if (!d) continue;
    const f = path.join(d, name);
    try {
      accessSync(f, constants.X_OK);
      return f;
    } catch {
      // not here
    }
  }
  return undefined;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
    s.on('error', reject);
  });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

interface RunPlan {
  readonly file: string;
  readonly yaml: string;
  readonly name: string;
  readonly cells: number;
  /** `; stages pretrain (1) -> target (12)`, or '' for a sweep without stages. */
  readonly stages: string;
  readonly workers: number;
  readonly alpha: number;
  readonly dataRoot: string;
  readonly outRoot: string;
  readonly backend: string;
  /** A NATS server to use, or undefined: start one when nats-server is on PATH (unless noNats). */
  readonly nats: string | undefined;
  readonly noNats: boolean;
  readonly dashboardPort: number;
  /** Keep the dashboard after the sweep until Ctrl-C (the default in a terminal). */
  readonly serve: boolean;
  /** Compute the advisor's prediction for each finetune/freeze row (--no-advise: no). */
  readonly advise: boolean;
  /** The workers as Slurm jobs (--slurm N), or undefined: local child processes. */
  readonly slurm: SlurmPlan | undefined;
}

async function plan(file: string, o: RunFlags, io: CliIo): Promise<RunPlan> {
  const yaml = await readFile(file, 'utf8').catch((e: Error) => {
    throw new InvalidArgumentError(`cannot read ${file}: ${e.message}`);
  });
  const sweep = parseSweep(yaml, file); // validate before starting anything
  const noNats = o.nats === false;
  const slurm = slurmPlan(o, o.workersGiven);
  return {
    slurm,
    file,
    yaml,
    name: sweep.name,
    cells: sweep.cells.length,
    stages: sweep.stages.length
      ? `; stages ${sweep.stages.map((st) => `${st.name} (${st.cellIds.length})`).join(' -> ')}`
      : '',
    workers: o.workers,
    alpha: o.alpha,
    dataRoot: path.resolve(o.dataRoot),
    outRoot: path.resolve(o.out ?? path.join('runs', sweep.name)),
    backend: o.backend,
    nats: typeof o.nats === 'string' ? o.nats : noNats ? undefined : io.env['FERRY_NATS'],
    noNats,
    dashboardPort: o.dashboardPort,
    serve: o.serve || (io.stdout as { isTTY?: boolean }).isTTY === true,
    advise: o.advise !== false,
  };
}

/** Stopped in this order: workers (they release their leases), coordinator, dashboard, nats-server. */
const STOP_ORDER = ['worker', 'coordinator', 'dashboard', 'nats-server'] as const;

/**
 * `ferry run`: the embedded default. Starts a coordinator and N workers as child processes on this
 * machine (the same processes and protocol as a cluster), submits the sweep, shows progress, and
 * ends with the results table and files. Every child is supervised: one that exits unexpectedly is
 * restarted (same state, same address; a worker resumes its cell from its last checkpoint), and a
 * crash loop of the coordinator or of every worker ends the run with FERRY_ERR_CRASH_LOOP. Ctrl-C
 * stops every child; running again resumes (the coordinator's state and checkpoints live under --out).
 */
export async function runCommand(file: string, o: RunFlags, io: CliIo): Promise<number> {
  const p = await plan(file, o, io);
  await mkdir(p.outRoot, { recursive: true });
  const sup = new Supervisor();
  const run = { interrupted: false, sweepId: SUBJECTS.CLUSTER as string, publisher: null as EventPublisher | null };
  const progress = new RunProgress(io);
  sup.on((e) => {
    progress.clear(); // the live block is redrawn below the line at the next update
    report(io, e);
    publishProcessEvent(run.publisher, run.sweepId, e);
    void writeChildren(p.outRoot, sup);
  });
  const onSigint = (): void => {
    run.interrupted = true;
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  // A login node's ssh session that ends: stop as for Ctrl-C (Slurm jobs cancelled), not die.
  process.on('SIGHUP', onSigint);
  let workers: RunWorkers | undefined;
  try {
    const natsUrl = await startNats(sup, p, io);
    if (natsUrl) run.publisher = new EventPublisher({ target: { url: natsUrl, name: 'ferry-run' } });
    const reach = p.slurm ? await slurmReach(p.slurm.flags, p.outRoot) : LOCAL_REACH;
    const bound = { address: '' };
    const coordinator = await sup.add(coordinatorSpec(p, natsUrl, reach, () => bound.address));
    bound.address = coordinator.address;
    const conn = clientConnection(coordinator.address, reach);
    // With NATS the dashboard follows JetStream; without it, the coordinator's own event feed.
    const dashboardUrl = await startDashboard(sup, p, natsUrl ? ['--nats', natsUrl] : dashboardFeedArgs(conn, reach));
    const say = (line: string): void => {
      progress.clear(); // redrawn below the line at the next update
      err(io, line);
    };
    workers = p.slurm
      ? await startSlurmWorkers({
          plan: p.slurm,
          sweep: p.name,
          outRoot: p.outRoot,
          dataRoot: p.dataRoot,
          backend: p.backend,
          reach,
          conn,
          // Our own nats-server listens on loopback: jobs on other nodes reach only one given.
          nats: p.nats,
          env: io.env as NodeJS.ProcessEnv,
          say,
        })
      : await localWorkers(sup, p, coordinator.address, natsUrl);
    await writeChildren(p.outRoot, sup);
    err(
      io,
      `ferry run: sweep "${p.name}" (${p.cells} cells${p.stages}) on ${workers.description}; coordinator ${conn.address}; output ${p.outRoot}; logs ${path.join(p.outRoot, 'logs')}`,
    );
    if (dashboardUrl) out(io, `dashboard: ${dashboardUrl}`);
    const code = await watch(p, workers, coordinator, conn, run, progress, io);
    if (code !== 130 && dashboardUrl && p.serve) {
      // In a terminal (or --serve): the workers are done, the dashboard stays until Ctrl-C.
      await workers.stop();
      err(io, `ferry run: the dashboard stays at ${dashboardUrl} until Ctrl-C`);
      while (!run.interrupted) await new Promise((r) => setTimeout(r, 200));
    }
    return code;
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    process.off('SIGHUP', onSigint);
    // Slurm jobs are cancelled (nothing stays queued); a Slurm that cannot be reached is said.
    await workers?.stop().catch((e: Error) => err(io, `ferry run: ${e.message}`));
    await sup.stopAll(STOP_ORDER);
    await run.publisher?.close();
  }
}

function logPath(p: RunPlan, name: string): string {
  return path.join(p.outRoot, 'logs', `${name}.log`);
}

/** Events: the given NATS, or a nats-server of our own (JetStream, state under --out) when on PATH. */
async function startNats(sup: Supervisor, p: RunPlan, io: CliIo): Promise<string | undefined> {
  if (p.noNats || p.nats) return p.nats;
  // FERRY_NATS_SERVER names the binary (a build of your own), or, empty, says there is none.
  const given = io.env['FERRY_NATS_SERVER'];
  const natsBin = given !== undefined ? given || undefined : findExecutable('nats-server', io.env);
  if (!natsBin) {
    err(
      io,
      'ferry run: nats-server is not on PATH (or FERRY_NATS_SERVER): the dashboard follows the coordinator (epochs, no step-level progress; apt-get install nats-server for more)',
    );
    return undefined;
  }
  const port = await freePort();
  const args = ['-js', '-sd', path.join(p.outRoot, 'nats'), '-a', '127.0.0.1', '-p', String(port)];
  await sup.add({
    name: 'nats-server',
    kind: 'nats-server',
    command: natsBin,
    args: () => args,
    log: logPath(p, 'nats-server'),
    readyPort: port,
    readyTimeoutMs: 10_000,
  });
  return `nats://127.0.0.1:${port}`;
}

function coordinatorSpec(
  p: RunPlan,
  natsUrl: string | undefined,
  reach: CoordinatorReach,
  bound: () => string,
): ChildSpec {
  const [node, bin] = ferryBin();
  return {
    name: 'coordinator',
    kind: 'coordinator',
    command: node,
    // A restart binds the address of the first start: workers reconnect to it and keep their cells.
    args: () => [
      bin,
      'coordinator',
      '--listen',
      bound() || reach.listen,
      '--state',
      path.join(p.outRoot, 'state'),
      ...coordinatorReachArgs(reach),
      ...(natsUrl ? ['--nats', natsUrl] : []),
    ],
    log: logPath(p, 'coordinator'),
    readyLine: /^listening on (\S+)$/,
  };
}

async function startDashboard(sup: Supervisor, p: RunPlan, source: readonly string[]): Promise<string> {
  const [node, bin] = ferryBin();
  const port = p.dashboardPort !== 0 && (await portFree(p.dashboardPort)) ? p.dashboardPort : await freePort();
  const dashboard = await sup.add({
    name: 'dashboard',
    kind: 'dashboard',
    command: node,
    args: () => [bin, 'dashboard', ...source, '--listen', `127.0.0.1:${port}`],
    log: logPath(p, 'dashboard'),
    readyLine: /^dashboard on (\S+)$/,
  });
  return dashboard.address;
}

/** The dashboard's flags to follow the coordinator's own feed (no NATS). */
function dashboardFeedArgs(conn: ConnectionOptions, reach: CoordinatorReach): string[] {
  return [
    '--coordinator',
    conn.address,
    ...(reach.tokenFile ? ['--coordinator-token-file', reach.tokenFile] : []),
    ...(reach.tls ? ['--coordinator-tls-ca', reach.tls.ca] : []),
  ];
}

/** N workers as children of this process, each on its share of the cores; a crash loop of all ends the run. */
async function localWorkers(
  sup: Supervisor,
  p: RunPlan,
  coordinator: string,
  natsUrl: string | undefined,
): Promise<RunWorkers> {
  const threads = Math.max(1, Math.floor(os.availableParallelism() / p.workers));
  for (let i = 0; i < p.workers; i++) await sup.add(workerSpec(p, i, threads, coordinator, natsUrl));
  return {
    description: `${p.workers} local worker(s)`,
    check: async () => {
      const children = sup.list('worker');
      if (children.every((w) => w.gaveUp)) throw crashLoop(children, p.outRoot);
    },
    stop: async () => void (await Promise.all(sup.list('worker').map((w) => w.stop(30_000)))),
  };
}

function workerSpec(
  p: RunPlan,
  i: number,
  threads: number,
  coordinator: string,
  natsUrl: string | undefined,
): ChildSpec {
  const [node, bin] = ferryBin();
  const args = [
    bin,
    'worker',
    '--coordinator',
    coordinator,
    '--data-root',
    p.dataRoot,
    '--work-dir',
    path.join(p.outRoot, 'workers', `w${i}`),
    '--name',
    `local-${i}`,
    '--backend',
    p.backend,
    '--threads',
    String(threads),
    '--poll-ms',
    '1000',
    ...(natsUrl ? ['--nats', natsUrl] : []),
  ];
  return {
    name: `worker local-${i}`,
    kind: 'worker',
    command: node,
    args: () => args,
    // The machine's cores split between the workers (wasm's pool, libtorch's intra-op threads): two
    // workers each on all cores oversubscribe them, and libtorch's spinning threads made a step 3-4x slower.
    env: { ...process.env, FERRY_WASM_THREADS: String(threads), FERRY_TORCH_THREADS: String(threads) },
    log: logPath(p, `worker-${i}`),
  };
}

/** `<out>/children.json`: each child's pid, log and restarts, rewritten at every (re)start. */
async function writeChildren(outRoot: string, sup: Supervisor): Promise<void> {
  const children = sup.list().map((c) => ({
    name: c.spec.name,
    kind: c.spec.kind,
    pid: c.pid ?? null,
    alive: c.alive,
    restarts: c.restarts,
    gaveUp: c.gaveUp,
    log: c.spec.log,
  }));
  // Atomic (a temporary file renamed into place): a reader never sees half a file.
  await writeFileAtomic(path.join(outRoot, 'children.json'), `${JSON.stringify({ children }, null, 2)}\n`).catch(
    () => undefined,
  );
}

/** A supervisor event as terminal lines: warnings as they happen, each crash and restart. */
function report(io: CliIo, e: SupervisorEvent): void {
  const tail = (lines: readonly string[]): string => lastLinesText(e.child.log, lines);
  switch (e.type) {
    case 'warning':
      err(io, `${e.child.name}: ${e.line}`);
      break;
    case 'crashed':
      err(
        io,
        `ferry run: ${e.child.name} exited unexpectedly (${e.exit}); restart ${e.restarts} in ${(e.restartInMs / 1000).toFixed(1)} s${tail(e.tail)}`,
      );
      break;
    case 'restarted':
      err(io, `ferry run: ${e.child.name} restarted (pid ${e.pid})`);
      break;
    case 'gave-up': {
      const without =
        e.child.kind === 'dashboard'
          ? '; continuing without the dashboard'
          : e.child.kind === 'nats-server'
            ? '; continuing without live events'
            : '';
      err(
        io,
        `ferry run: ${e.child.name} crashed ${e.crashes} times within ${e.windowMs / 60_000} minutes: not restarting it${without} (last: ${e.exit})${tail(e.tail)}`,
      );
      break;
    }
  }
}

function publishProcessEvent(publisher: EventPublisher | null, sweepId: string, e: SupervisorEvent): void {
  if (!publisher || e.type === 'warning') return;
  publisher.publish(
    SUBJECTS.process(sweepId, e.child.name),
    FerryEvent.fromPartial({
      sweepId,
      time: new Date().toISOString(),
      process: {
        name: e.child.name,
        kind: e.child.kind,
        state: e.type,
        exit: e.type === 'restarted' ? '' : e.exit,
        restarts: e.type === 'gave-up' ? 0 : e.restarts,
        logTail: e.type === 'restarted' ? [] : [...e.tail],
        log: e.child.log,
      },
    }),
  );
}

/** The error that ends a run whose coordinator, or every worker, is in a crash loop. */
function crashLoop(children: readonly Supervised[], outRoot: string): FerryError {
  const what = children.length === 1 ? children[0]!.spec.name : `every worker (${children.length})`;
  return new FerryError(
    'FERRY_ERR_CRASH_LOOP',
    `${what} kept exiting, so the sweep cannot progress; ferry run stopped restarting:\n` +
      children.map((c) => `${c.spec.name} (last: ${c.lastExit})${c.tailText()}`).join('\n') +
      `\nfix the cause and run the same command again: finished cells are kept (${path.join(outRoot, 'state')})`,
  );
}

const INTERRUPTED = Symbol('interrupted');

/** Waits for the advice still being computed, unless Ctrl-C (or SIGTERM) comes first. */
async function settleUnlessInterrupted(advisor: RunAdvisor, run: { readonly interrupted: boolean }): Promise<void> {
  let settled = false;
  const done = advisor.settle().finally(() => (settled = true));
  while (!settled && !run.interrupted) await Promise.race([done, new Promise((r) => setTimeout(r, 200))]);
  if (run.interrupted) throw INTERRUPTED;
}

/** UNAVAILABLE or DEADLINE_EXCEEDED: the coordinator is away (restarting), not answering no. */
function coordinatorAway(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return code === 14 || code === 4;
}

/** Submits the sweep and follows it to the end: progress, stalls, crash loops, the results. */
async function watch(
  p: RunPlan,
  workers: RunWorkers,
  coordinator: Supervised,
  conn: ConnectionOptions,
  run: { interrupted: boolean; sweepId: string },
  progress: RunProgress,
  io: CliIo,
): Promise<number> {
  const admin = adminClient(conn);
  // Every call waits out a coordinator restart; a coordinator in a crash loop ends the run.
  const call = async <T>(fn: () => Promise<T>): Promise<T> => {
    for (;;) {
      if (coordinator.gaveUp) throw crashLoop([coordinator], p.outRoot);
      try {
        return await fn();
      } catch (e) {
        if (!coordinatorAway(e)) throw e;
        // Ctrl-C while the coordinator is away (restarting) is an interruption, not an error.
        if (run.interrupted) throw INTERRUPTED;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  };
  let advisor: RunAdvisor | null = null;
  try {
    const sub = await call(() =>
      unary(
        admin.submitSweep,
        admin,
        { yaml: p.yaml, fileName: path.basename(p.file), datasetFingerprints: {}, maxAttempts: 0 },
        conn,
        30_000,
      ),
    );
    run.sweepId = sub.sweepId;
    if (p.advise) advisor = runAdvisor(p, admin, conn, sub.sweepId, progress, io);
    const stall = { since: undefined as number | undefined };
    for (;;) {
      if (run.interrupted) {
        progress.done('interrupted: stopping workers (their cells resume on the next run)');
        return 130;
      }
      const s = await call(() => getSweepAll(admin, conn, sub.sweepId, { withResults: false }));
      await workers.check(s);
      const total = s.cells.length;
      progress.update(s);
      advisor?.update(s);
      // Cells that name backends no local worker has wait for nothing: give the reason.
      const needBackends = s.running === 0 && s.cells.some((c) => c.state === 'pending' && c.spec!.backends.length > 0);
      const backends = needBackends
        ? (await call(() => unary(admin.listWorkers, admin, {}, conn, 10_000))).workers
            .filter((w) => w.state === 'alive')
            .map((w) => w.capabilities?.backend ?? '')
        : [];
      checkStall(s, backends, stall, progress, p.outRoot);
      if (s.done + s.failed + s.cancelled + s.blocked === total) {
        progress.done(
          `${s.done}/${total} cells done${s.failed ? `, ${s.failed} failed` : ''}${s.blocked ? `, ${s.blocked} blocked by a failed source` : ''}`,
        );
        // The advice in the table; Ctrl-C while it finishes stops it (the cells are done).
        if (advisor) await settleUnlessInterrupted(advisor, run);
        return await finish(
          p,
          await call(() => getSweepAll(admin, conn, sub.sweepId, { withResults: true, timeoutMs: 60_000 })),
          io,
        );
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  } catch (e) {
    if (e !== INTERRUPTED) throw e;
    progress.done('interrupted: stopping workers (their cells resume on the next run)');
    return 130;
  } finally {
    advisor?.stop(); // Ctrl-C or an error: the advice still running stops
    admin.close();
  }
}

function runAdvisor(
  p: RunPlan,
  admin: AdminClient,
  conn: ConnectionOptions,
  sweepId: string,
  progress: RunProgress,
  io: CliIo,
): RunAdvisor {
  const say = (line: string): void => {
    progress.clear(); // redrawn below the line at the next update
    err(io, line);
  };
  return new RunAdvisor(
    { dataRoot: p.dataRoot, cacheDir: defaultCacheDir(io), backend: p.backend, io, say },
    admin,
    conn,
    sweepId,
  );
}

/**
 * A sweep that cannot progress is said, not waited on: cells pending with an error and nothing
 * running for STALL_MS means no local worker will take them (a dataset missing under --data-root).
 */
export function checkStall(
  s: SweepStatus,
  workerBackends: readonly string[],
  stall: { since: number | undefined },
  progress: RunProgress,
  outRoot: string,
): void {
  const byId = new Map(s.cells.map((c) => [c.cellId, c]));
  const unrunnable = (c: SweepStatus['cells'][number]): string => {
    // A cell of a later stage waiting for its source is not stuck: it starts when the source is done.
    if (c.state !== 'pending' || waitingForSource(c, (id) => byId.get(id)?.state) !== null) return '';
    if (c.error) return c.error;
    const wanted = c.spec!.backends;
    if (wanted.length > 0 && workerBackends.length > 0 && !workerBackends.some((b) => wanted.includes(b))) {
      return `FERRY_ERR_BACKEND_UNAVAILABLE: the cell runs only on ${wanted.join(' or ')}; the local workers run ${[...new Set(workerBackends)].join(', ')} (see --backend)`;
    }
    return '';
  };
  const stuck = s.running === 0 ? s.cells.filter((c) => unrunnable(c) !== '') : [];
  stall.since = stuck.length === 0 ? undefined : (stall.since ?? Date.now());
  if (stall.since === undefined || Date.now() - stall.since < STALL_MS) return;
  progress.done(`${s.done}/${s.cells.length} done; ${stuck.length} cell(s) cannot start`);
  const code = /FERRY_ERR_[A-Z_]+/.exec(unrunnable(stuck[0]!))?.[0] ?? '';
  throw new FerryError(
    isErrorCode(code) ? code : 'FERRY_ERR_INTERNAL',
    `no worker can run ${stuck.length} pending cell(s), nothing has run for ${STALL_MS / 1000} s:\n` +
      stuck.map((c) => `  ${cellLabel(c)}: ${unrunnable(c)}`).join('\n') +
      `\nworker logs: ${path.join(outRoot, 'logs')}`,
  );
}

/**
 * A result as results.json holds it: every field of ferry.v1.CellResult (zeros too, unlike proto3
 * JSON), confusion matrices as arrays of rows.
 */
function plainResult(r: CellResult): unknown {
  const matrix = (rows: readonly { counts: readonly number[] }[]): (readonly number[])[] => rows.map((x) => x.counts);
  return {
    ...r,
    confusion: matrix(r.confusion),
    epochs: r.epochs.map((e) => ({ ...e, confusion: matrix(e.confusion) })),
  };
}

/** The results table on stdout and in results.md/.csv/.json. */
async function finish(p: RunPlan, s: SweepStatus, io: CliIo): Promise<number> {
  for (const c of s.cells.filter((x) => x.state === 'failed')) err(io, `failed: ${cellLabel(c)}: ${c.error}`);
  // Not failures of their own: they never ran, because their source failed.
  for (const c of s.cells.filter((x) => x.state === 'blocked')) err(io, `blocked: ${cellLabel(c)}: ${c.error}`);
  const t = resultsTable(outcomes(s), { alpha: p.alpha, advice: sweepAdvice(s) });
  await writeFileAtomic(path.join(p.outRoot, 'results.md'), `${tableMarkdown(t)}\n`);
  await writeFileAtomic(path.join(p.outRoot, 'results.csv'), `${tableCsv(t)}\n`);
  await writeFileAtomic(path.join(p.outRoot, 'results.html'), resultsHtml(p.name, t, reportCells(s)));
  const cells = s.cells.map((c) => ({
    cellId: c.cellId,
    state: c.state,
    attempts: c.attempts,
    result: c.result ? plainResult(c.result) : null,
    error: c.error || null,
    // The cell whose best weights it starts from (a later stage), or null.
    source: sourceCellOf(c.spec!.weights),
  }));
  await writeFileAtomic(
    path.join(p.outRoot, 'results.json'),
    `${JSON.stringify({ sweep: s.sweepId, table: t, cells }, null, 2)}\n`,
  );
  out(io, tableMarkdown(t));
  out(io);
  out(
    io,
    `results: ${path.join(p.outRoot, 'results.md')} (.csv, .json), report: ${path.join(p.outRoot, 'results.html')}; coordinator state: ${path.join(p.outRoot, 'state')}; logs: ${path.join(p.outRoot, 'logs')}`,
  );
  return s.failed > 0 ? 1 : 0;
}
