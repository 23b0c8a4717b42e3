import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { constants, accessSync, createWriteStream } from 'node:fs';
import { connect, createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseSweep } from '@ferry/coordinator';
import { FerryError, isErrorCode, resultsTable, tableCsv, tableMarkdown } from '@ferry/common';
import { InvalidArgumentError } from '@ferry/core';
import { adminClient, unary, type ConnectionOptions } from '@ferry/worker';
import { Args } from '../args.js';
import { ProgressLine, err, out, type CliIo } from '../io.js';
import { outcomes, significanceLevel } from './cluster.js';

/** How long pending cells with an error may wait with nothing running before `ferry run` gives up on them. */
const STALL_MS = 15_000;

const USAGE = 'ferry run SWEEP.yaml [--workers N] [--data-root data] [--out runs/<sweep>] [--backend B] [--nats URL | --no-nats] [--dashboard-port 8080] [--alpha 0.05]';

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

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect(port, '127.0.0.1', () => {
        sock.end();
        resolve(true);
      });
      sock.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new InvalidArgumentError(`nats-server did not open port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Spawns a ferry subcommand and resolves with the first stdout line matching `pattern`. */
function startChild(args: string[], pattern: RegExp, io: CliIo, env: NodeJS.ProcessEnv = process.env): { child: ChildProcess; ready: Promise<string> } {
  const [node, bin] = ferryBin();
  const child = spawn(node, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  child.stderr!.on('data', (d: Buffer) => io.stderr.write(d));
  const ready = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = pattern.exec(line);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new InvalidArgumentError(`ferry ${args[0]} exited (code ${code}) before it was ready`)));
  });
  return { child, ready };
}

/** The `ferry` entry script (from src/ under a TS runner, or dist/ when built: both two levels down). */
export function ferryBin(): [string, string] {
  return [process.execPath, fileURLToPath(new URL('../../bin/ferry.js', import.meta.url))];
}


/**
 * `ferry run`: the embedded default. Starts a coordinator and N workers as child processes on this
 * machine (the same processes and protocol as a cluster), submits the sweep, shows progress, and
 * ends with the results table and files. Ctrl-C stops every child; running again resumes (the
 * coordinator's state and checkpoints live under --out).
 */
export async function runCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const args = Args.parse(
    argv,
    {
      workers: { type: 'string' },
      'data-root': { type: 'string' },
      out: { type: 'string' },
      backend: { type: 'string' },
      nats: { type: 'string' },
      'no-nats': { type: 'boolean' },
      'dashboard-port': { type: 'string' },
      alpha: { type: 'string' },
    },
    USAGE,
  );
  const file = args.positionals[0];
  if (!file) throw new InvalidArgumentError(`which sweep file? usage: ${USAGE}`);
  const yaml = await readFile(file, 'utf8').catch((e: Error) => {
    throw new InvalidArgumentError(`cannot read ${file}: ${e.message}`);
  });
  const sweep = parseSweep(yaml, file); // validate before starting anything
  const workers = args.int('workers', 1, 1);
  const alpha = significanceLevel(args);
  const dataRoot = path.resolve(args.string('data-root') ?? 'data');
  const outRoot = path.resolve(args.string('out') ?? path.join('runs', sweep.name));
  await mkdir(outRoot, { recursive: true });
  // Stopped in this order: workers (they release their leases), coordinator, dashboard, nats-server.
  const groups: { workers: ChildProcess[]; coordinator: ChildProcess[]; dashboard: ChildProcess[]; nats: ChildProcess[] } = { workers: [], coordinator: [], dashboard: [], nats: [] };
  let interrupted = false;
  const stopAll = async (): Promise<void> => {
    for (const g of [groups.workers, groups.coordinator, groups.dashboard, groups.nats]) {
      const alive = g.filter((c) => c.exitCode === null && c.signalCode === null);
      for (const c of alive) c.kill('SIGTERM');
      await Promise.all(alive.map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)))));
    }
  };
  const onSigint = (): void => {
    interrupted = true;
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  try {
    // Events: the given NATS, or a nats-server of our own (JetStream, state under --out) when on PATH.
    let natsUrl = args.flag('no-nats') ? undefined : (args.string('nats') ?? io.env['FERRY_NATS']);
    if (!natsUrl && !args.flag('no-nats')) {
      const natsBin = findExecutable('nats-server', io.env);
      if (natsBin) {
        const port = await freePort();
        const child = spawn(natsBin, ['-js', '-sd', path.join(outRoot, 'nats'), '-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
        groups.nats.push(child);
        await waitForPort(port, 10_000);
        natsUrl = `nats://127.0.0.1:${port}`;
      } else {
        err(io, 'ferry run: nats-server is not on PATH: no live events and no dashboard (apt-get install nats-server)');
      }
    }
    const natsArgs = natsUrl ? ['--nats', natsUrl] : [];
    const coord = startChild(['coordinator', '--listen', '127.0.0.1:0', '--state', path.join(outRoot, 'state'), ...natsArgs], /^listening on (\S+)$/, io);
    groups.coordinator.push(coord.child);
    const address = await coord.ready;
    let dashboardUrl: string | undefined;
    if (natsUrl) {
      const wanted = args.int('dashboard-port', 8080, 0);
      const port = wanted !== 0 && (await portFree(wanted)) ? wanted : await freePort();
      const dash = startChild(['dashboard', '--nats', natsUrl, '--listen', `127.0.0.1:${port}`], /^dashboard on (\S+)$/, io);
      groups.dashboard.push(dash.child);
      dashboardUrl = await dash.ready;
    }
    const threads = Math.max(1, Math.floor(os.availableParallelism() / workers));
    const [node, bin] = ferryBin();
    for (let i = 0; i < workers; i++) {
      const child = spawn(
        node,
        [bin, 'worker', '--coordinator', address, '--data-root', dataRoot, '--work-dir', path.join(outRoot, 'workers', `w${i}`), '--name', `local-${i}`, '--backend', args.string('backend') ?? 'auto', '--threads', String(threads), '--poll-ms', '1000', ...natsArgs],
        { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, FERRY_WASM_THREADS: String(threads) } },
      );
      const log = path.join(outRoot, 'workers', `w${i}.log`);
      await mkdir(path.dirname(log), { recursive: true });
      // The log is written as it comes (a crash leaves everything up to it), and the terminal
      // shows a worker's warnings and errors when they happen, not at exit.
      const file = createWriteStream(log, { flags: 'a' });
      child.stderr!.pipe(file);
      createInterface({ input: child.stderr! }).on('line', (line) => {
        if (/\b(warning|error|failed|FERRY_ERR_[A-Z_]+)\b/i.test(line)) err(io, `worker local-${i}: ${line}`);
      });
      groups.workers.push(child);
    }
    err(io, `ferry run: sweep "${sweep.name}" (${sweep.cells.length} cells) on ${workers} local worker(s); coordinator ${address}; output ${outRoot}`);
    if (dashboardUrl) out(io, `dashboard: ${dashboardUrl}`);
    const conn: ConnectionOptions = { address };
    const admin = adminClient(conn);
    try {
      const sub = await unary(admin.submitSweep, admin, { yaml, fileName: path.basename(file), datasetFingerprints: {}, maxAttempts: 0 }, conn, 30_000);
      const progress = new ProgressLine(io);
      let stalledSince: number | undefined;
      for (;;) {
        if (interrupted) {
          progress.done('interrupted: stopping workers (their cells resume on the next run)');
          return 130;
        }
        const s = await unary(admin.getSweep, admin, { sweepId: sub.sweepId }, conn, 10_000);
        const total = s.cells.length;
        const finished = s.done + s.failed + s.cancelled;
        const epochs = s.cells.reduce((a, c) => a + (c.state === 'done' ? c.spec!.epochs : Math.min(c.epoch, c.spec!.epochs)), 0);
        const allEpochs = s.cells.reduce((a, c) => a + c.spec!.epochs, 0);
        progress.update(allEpochs ? epochs / allEpochs : 0, `${s.done}/${total} done, ${s.running} running, ${s.failed} failed`);
        // A sweep that cannot progress is said, not waited on: cells pending with an error and
        // nothing running for STALL_MS means no local worker will take them (a dataset missing
        // under --data-root, say).
        const stuck = s.running === 0 ? s.cells.filter((c) => c.state === 'pending' && c.error) : [];
        stalledSince = stuck.length === 0 ? undefined : (stalledSince ?? Date.now());
        if (stalledSince !== undefined && Date.now() - stalledSince >= STALL_MS) {
          progress.done(`${s.done}/${total} done; ${stuck.length} cell(s) cannot start`);
          const code = /FERRY_ERR_[A-Z_]+/.exec(stuck[0]!.error)?.[0] ?? '';
          throw new FerryError(
            isErrorCode(code) ? code : 'FERRY_ERR_INTERNAL',
            `no worker can run ${stuck.length} pending cell(s), nothing has run for ${STALL_MS / 1000} s:\n` +
              stuck.map((c) => `  ${c.spec!.dataset} ${c.spec!.color} ${c.spec!.strategy} ${c.spec!.model} seed ${c.spec!.seed}: ${c.error}`).join('\n') +
              `\nworker logs: ${path.join(outRoot, 'workers')}`,
          );
        }
        if (finished === total) {
          progress.done(`${s.done}/${total} cells done${s.failed ? `, ${s.failed} failed` : ''}`);
          for (const c of s.cells.filter((x) => x.state === 'failed')) err(io, `failed: ${c.spec!.dataset} ${c.spec!.color} ${c.spec!.strategy} ${c.spec!.model} seed ${c.spec!.seed}: ${c.error}`);
          const t = resultsTable(outcomes(s), { alpha });
          await writeFile(path.join(outRoot, 'results.md'), `${tableMarkdown(t)}\n`);
          await writeFile(path.join(outRoot, 'results.csv'), `${tableCsv(t)}\n`);
          await writeFile(path.join(outRoot, 'results.json'), `${JSON.stringify({ sweep: s.sweepId, table: t, cells: s.cells.map((c) => ({ cellId: c.cellId, state: c.state, attempts: c.attempts, result: c.resultJson ? JSON.parse(c.resultJson) : null, error: c.error || null })) }, null, 2)}\n`);
          out(io, tableMarkdown(t));
          out(io);
          out(io, `results: ${path.join(outRoot, 'results.md')} (.csv, .json); coordinator state: ${path.join(outRoot, 'state')}`);
          return s.failed > 0 ? 1 : 0;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    } finally {
      admin.close();
    }
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    await stopAll();
  }
}
