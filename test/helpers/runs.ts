import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { CellStatus, SweepStatus } from '@ferry/protocol';
import { waitFor } from './cluster.js';
import { REPO_ROOT } from './torch-ref.js';

/**
 * Whole `ferry run` processes for the end-to-end tests (run-supervision, slurm): started, watched,
 * stopped when a test fails midway, and their results compared with an undisturbed run's.
 */
export const FERRY_BIN = path.join(REPO_ROOT, 'packages/cli/bin/ferry.js');

export interface CliRun {
  readonly child: ChildProcess;
  /** The run's --out folder. */
  readonly out: string;
  stdout(): string;
  stderr(): string;
  readonly exited: Promise<number | null>;
}

/** The `ferry run` processes a test file started; stopAll() in afterEach so none outlives its test. */
export class LiveRuns {
  private readonly live = new Set<CliRun>();

  /** `ferry run ARGS --out OUT` with `env` over this process's environment. */
  start(args: readonly string[], out: string, env: Record<string, string> = {}): CliRun {
    const child = spawn(process.execPath, [FERRY_BIN, 'run', ...args, '--out', out], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const run: CliRun = { child, out, stdout: () => stdout, stderr: () => stderr, exited };
    this.live.add(run);
    void exited.then(() => this.live.delete(run));
    return run;
  }

  /** Ctrl-C to every run still going; SIGKILL to one not gone after `graceMs`. */
  async stopAll(graceMs: number): Promise<void> {
    for (const run of this.live) {
      run.child.kill('SIGINT');
      const stopped = await Promise.race([
        run.exited.then(() => true),
        new Promise((r) => setTimeout(r, graceMs, false)),
      ]);
      if (!stopped) run.child.kill('SIGKILL');
    }
    this.live.clear();
  }
}

/** The loopback coordinator a run announced on stderr, once it has. */
export const loopbackCoordinator = (run: CliRun): string | undefined =>
  /coordinator (127\.0\.0\.1:\d+);/.exec(run.stderr())?.[1];

export type RunResults = {
  table: { rows: unknown[] };
  cells: {
    cellId: string;
    state: string;
    attempts: number;
    result: {
      resumedFromEpoch: number;
      bestValAccuracy: number;
      epochs: { epoch: number; trainLoss: number; trainAccuracy: number; valLoss: number; valAccuracy: number }[];
    };
  }[];
};

export const runResults = (out: string): RunResults =>
  JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as RunResults;

/**
 * What must not depend on crashes or on where the workers ran: the table and each cell's epoch
 * history (times aside); with `attempts`, also how many attempts each cell took.
 */
export function comparable(r: RunResults, options: { attempts?: boolean } = {}) {
  return {
    rows: JSON.parse(
      JSON.stringify(r.table.rows, (k, v: unknown) => (/wallMs|imagesPerSec/.test(k) ? undefined : v)),
    ) as unknown,
    cells: [...r.cells]
      .sort((a, b) => a.cellId.localeCompare(b.cellId))
      .map((c) => ({
        cellId: c.cellId,
        state: c.state,
        ...(options.attempts ? { attempts: c.attempts } : {}),
        epochs: c.result.epochs.map((e) => [e.epoch, e.trainLoss, e.trainAccuracy, e.valLoss, e.valAccuracy]),
      })),
  };
}

/** Waits for a running cell with at least `epochs` epochs checkpointed (so a kill lands mid-cell). */
export const checkpointedCell = (
  sweep: () => Promise<SweepStatus | undefined>,
  epochs: number,
  timeoutMs: number,
): Promise<CellStatus> =>
  waitFor(
    `a running cell with ${epochs} epoch(s) checkpointed`,
    timeoutMs,
    async () => (await sweep())?.cells.find((c) => c.state === 'running' && c.checkpointEpochs >= epochs),
    200,
  );
