import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseSweep, resultsTable, tableCsv, tableMarkdown } from '@ferry/coordinator';
import { InvalidArgumentError } from '@ferry/core';
import { adminClient, unary, type ConnectionOptions } from '@ferry/worker';
import { Args } from '../args.js';
import { ProgressLine, err, out, type CliIo } from '../io.js';
import { outcomes } from './cluster.js';

const USAGE = 'ferry run SWEEP.yaml [--workers N] [--data-root data] [--out runs/<sweep>] [--backend B]';

/** The `ferry` entry script (from src/ under a TS runner, or dist/ when built: both two levels down). */
export function ferryBin(): [string, string] {
  return [process.execPath, fileURLToPath(new URL('../../bin/ferry.js', import.meta.url))];
}

/** Spawns `ferry coordinator` on a free loopback port and resolves with its address. */
function startCoordinator(stateDir: string, io: CliIo, children: ChildProcess[]): Promise<string> {
  const [node, bin] = ferryBin();
  const child = spawn(node, [bin, 'coordinator', '--listen', '127.0.0.1:0', '--state', stateDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  child.stderr.on('data', (d: Buffer) => io.stderr.write(d));
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      const m = /^listening on (\S+)$/.exec(line);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new InvalidArgumentError(`the coordinator exited (code ${code}) before listening`)));
  });
}

/**
 * `ferry run`: the embedded default. Starts a coordinator and N workers as child processes on this
 * machine (the same processes and protocol as a cluster), submits the sweep, shows progress, and
 * ends with the results table and files. Ctrl-C stops every child; running again resumes (the
 * coordinator's state and checkpoints live under --out).
 */
export async function runCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const args = Args.parse(argv, { workers: { type: 'string' }, 'data-root': { type: 'string' }, out: { type: 'string' }, backend: { type: 'string' } }, USAGE);
  const file = args.positionals[0];
  if (!file) throw new InvalidArgumentError(`which sweep file? usage: ${USAGE}`);
  const yaml = await readFile(file, 'utf8').catch((e: Error) => {
    throw new InvalidArgumentError(`cannot read ${file}: ${e.message}`);
  });
  const sweep = parseSweep(yaml, file); // validate before starting anything
  const workers = args.int('workers', 1, 1);
  const dataRoot = path.resolve(args.string('data-root') ?? 'data');
  const outRoot = path.resolve(args.string('out') ?? path.join('runs', sweep.name));
  await mkdir(outRoot, { recursive: true });
  const children: ChildProcess[] = [];
  let interrupted = false;
  const stopAll = async (): Promise<void> => {
    const alive = children.filter((c) => c.exitCode === null && c.signalCode === null);
    // Workers first (they release their leases), then the coordinator.
    for (const c of alive.slice(1)) c.kill('SIGTERM');
    await Promise.all(alive.slice(1).map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    alive[0]?.kill('SIGTERM');
    await new Promise((r) => (!alive[0] || alive[0].exitCode !== null ? r(null) : alive[0].once('exit', r)));
  };
  const onSigint = (): void => {
    interrupted = true;
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  try {
    const address = await startCoordinator(path.join(outRoot, 'state'), io, children);
    const threads = Math.max(1, Math.floor(os.availableParallelism() / workers));
    const [node, bin] = ferryBin();
    for (let i = 0; i < workers; i++) {
      const child = spawn(
        node,
        [bin, 'worker', '--coordinator', address, '--data-root', dataRoot, '--work-dir', path.join(outRoot, 'workers', `w${i}`), '--name', `local-${i}`, '--backend', args.string('backend') ?? 'auto', '--threads', String(threads), '--poll-ms', '1000'],
        { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, FERRY_WASM_THREADS: String(threads) } },
      );
      const log = path.join(outRoot, 'workers', `w${i}.log`);
      await mkdir(path.dirname(log), { recursive: true });
      const chunks: Buffer[] = [];
      child.stderr!.on('data', (d: Buffer) => chunks.push(d));
      child.on('exit', () => void writeFile(log, Buffer.concat(chunks)));
      children.push(child);
    }
    err(io, `ferry run: sweep "${sweep.name}" (${sweep.cells.length} cells) on ${workers} local worker(s); coordinator ${address}; output ${outRoot}`);
    const conn: ConnectionOptions = { address };
    const admin = adminClient(conn);
    try {
      const sub = await unary(admin.submitSweep, admin, { yaml, fileName: path.basename(file), datasetFingerprints: {}, maxAttempts: 0 }, conn, 30_000);
      const progress = new ProgressLine(io);
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
        if (finished === total) {
          progress.done(`${s.done}/${total} cells done${s.failed ? `, ${s.failed} failed` : ''}`);
          for (const c of s.cells.filter((x) => x.state === 'failed')) err(io, `failed: ${c.spec!.dataset} ${c.spec!.color} ${c.spec!.strategy} ${c.spec!.model} seed ${c.spec!.seed}: ${c.error}`);
          const t = resultsTable(outcomes(s));
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
