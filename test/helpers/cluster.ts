import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { SweepStatus } from '@ferry/protocol';
import { adminClient, getSweepAll, unary, type ConnectionOptions } from '@ferry/client';
import { DEFAULT_TICK_MS } from '@ferry/coordinator';
import { REPO_ROOT } from './torch-ref.js';

const BIN = path.join(REPO_ROOT, 'packages/cli/bin/ferry.js');

/** How often the coordinator checks leases (its default; `ferry coordinator` has no flag for it). */
export const TICK_MS = DEFAULT_TICK_MS;
/** After a lease runs out: the next lease check, and the status call that sees it. */
export const EXPIRY_SLACK_MS = TICK_MS + 1_000;

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export interface Proc {
  readonly child: ChildProcess;
  readonly log: () => string;
  readonly exited: Promise<number | null>;
}

function track(child: ChildProcess): Proc {
  let text = '';
  child.stdout?.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (text += d.toString()));
  return { child, log: () => text, exited: new Promise((r) => child.on('exit', (code) => r(code))) };
}

/** A real `ferry coordinator` process; resolves once it listens. */
export async function startCoordinator(
  args: string[],
  env: Record<string, string> = {},
): Promise<Proc & { address: string }> {
  const child = spawn(process.execPath, [BIN, 'coordinator', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p = track(child);
  const address = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      const m = /^listening on (\S+)$/.exec(l);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`coordinator exited with ${code}: ${p.log()}`)));
  });
  return { ...p, address };
}

/** A real `ferry worker` process (single-threaded wasm, short polls). */
export function startWorker(
  address: string,
  opts: {
    name: string;
    dataRoot: string;
    workDir: string;
    cacheDir: string;
    extra?: string[];
    env?: Record<string, string>;
  },
): Proc {
  const child = spawn(
    process.execPath,
    [
      BIN,
      'worker',
      '--coordinator',
      address,
      '--name',
      opts.name,
      '--data-root',
      opts.dataRoot,
      '--work-dir',
      opts.workDir,
      '--backend',
      'wasm',
      '--threads',
      '1',
      '--poll-ms',
      '300',
      ...(opts.extra ?? []),
    ],
    {
      env: { ...process.env, FERRY_WASM_THREADS: '1', FERRY_CACHE: opts.cacheDir, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  return track(child);
}

export async function getSweep(conn: ConnectionOptions, sweepId: string): Promise<SweepStatus> {
  const admin = adminClient(conn);
  try {
    return await getSweepAll(admin, conn, sweepId, { withResults: true, timeoutMs: 5_000 });
  } finally {
    admin.close();
  }
}

export async function submit(conn: ConnectionOptions, yaml: string, maxAttempts = 0): Promise<string> {
  const admin = adminClient(conn);
  try {
    return (
      await unary(
        admin.submitSweep,
        admin,
        { yaml, fileName: 'test.yaml', datasetFingerprints: {}, maxAttempts },
        conn,
        10_000,
      )
    ).sweepId;
  } finally {
    admin.close();
  }
}

/** Polls `check` until it returns a value (not undefined), or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  check: () => Promise<T | undefined>,
  everyMs = 100,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until)
      throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export function kill(p: Proc, signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  return p.exited;
}

/** A real nats-server with JetStream on a free port (Debian's, /usr/sbin). */
export async function startNats(
  storeDir: string,
  port?: number,
  extra: string[] = [],
): Promise<Proc & { url: string; port: number }> {
  const p = port ?? (await freePort());
  const bin =
    ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'].find((f) => existsSync(f)) ??
    'nats-server';
  const child = spawn(bin, ['-js', '-sd', storeDir, '-a', '127.0.0.1', '-p', String(p), ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc = track(child);
  await waitFor(
    'nats-server to listen',
    10_000,
    async () => {
      if (/Server is ready/.test(proc.log())) return true;
      if (child.exitCode !== null) throw new Error(`nats-server exited: ${proc.log()}`);
      return undefined;
    },
    50,
  );
  return { ...proc, url: `nats://127.0.0.1:${p}`, port: p };
}

/** Fields that measure time or where an attempt resumed: they differ between runs of the same sweep. */
const NOT_COMPARED = /^(wallMs|imagesPerSec|trainMs|valMs|dataWaitMs|finishedAt|resumedFromEpoch)$/;

/**
 * What a fault must not change in a finished sweep, per cell (by id): its state and its result,
 * with every epoch's metrics (losses, accuracies, confusion) and the best epoch's predictions,
 * compared exactly (training resumes exactly from a checkpoint); timings and resumedFromEpoch aside.
 */
export function outcome(s: SweepStatus): { cellId: string; state: string; result: unknown }[] {
  return [...s.cells]
    .sort((a, b) => a.cellId.localeCompare(b.cellId))
    .map((c) => ({
      cellId: c.cellId,
      state: c.state,
      result: c.result
        ? (JSON.parse(JSON.stringify(c.result, (k, v: unknown) => (NOT_COMPARED.test(k) ? undefined : v))) as unknown)
        : null,
    }));
}

/** Each cell's attempt count, by cell id. */
export function attemptsOf(s: SweepStatus): Record<string, number> {
  return Object.fromEntries(s.cells.map((c) => [c.cellId, c.attempts]));
}

/** The epoch indices of each cell's result, by cell id (0..n-1 when no epoch is missing or recorded twice). */
export function epochIndices(s: SweepStatus): Record<string, number[]> {
  return Object.fromEntries(s.cells.map((c) => [c.cellId, (c.result?.epochs ?? []).map((e) => e.epoch)]));
}

/** The sweep `s` restricted to the cells of `ids` (a baseline's cells that a smaller sweep shares). */
export function only(s: SweepStatus, ids: readonly string[]): SweepStatus {
  return { ...s, cells: s.cells.filter((c) => ids.includes(c.cellId)) };
}
