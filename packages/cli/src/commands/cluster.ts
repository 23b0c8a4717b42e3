import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Coordinator, parseSweep, type CoordinatorOptions } from '@ferry/coordinator';
import {
  DEFAULT_ALPHA,
  isLoopbackHost,
  summarizeResult,
  resultsTable,
  tableCsv,
  tableMarkdown,
  type CellOutcome,
} from '@ferry/common';
import { InvalidArgumentError, datasetFingerprint, listNvidiaGpus } from '@ferry/core';
import type { SweepStatus } from '@ferry/protocol';
import { adminClient, ferryErrorFromGrpc, getSweepAll, unary, type ConnectionOptions } from '@ferry/client';
import { FerryWorker } from '@ferry/worker';
import { Args } from '../args.js';
import { reportCell, resultsHtml, type ReportCell } from '../report.js';
import { backendOptionsFromEnv, backendRequest } from '../backend-env.js';
import { err, out, table, type CliIo } from '../io.js';
import { ferryBin } from './run.js';
import { defaultCacheDir } from './weights.js';

const CONNECTION_FLAGS = {
  coordinator: { type: 'string' },
  token: { type: 'string' },
  'tls-ca': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-server-name': { type: 'string' },
  'insecure-token': { type: 'boolean' },
} as const;

/** Connection flags (and FERRY_TOKEN / FERRY_COORDINATOR from the environment). */
export function connectionFrom(args: Args, io: CliIo): ConnectionOptions {
  const address = args.string('coordinator') ?? io.env['FERRY_COORDINATOR'] ?? '127.0.0.1:7070';
  const token = args.string('token') ?? io.env['FERRY_TOKEN'];
  const ca = args.string('tls-ca');
  const cert = args.string('tls-cert');
  const key = args.string('tls-key');
  const serverName = args.string('tls-server-name');
  const tls =
    ca || cert || key
      ? {
          ...(ca ? { ca } : {}),
          ...(cert ? { cert } : {}),
          ...(key ? { key } : {}),
          ...(serverName ? { serverName } : {}),
        }
      : undefined;
  const host = /^(\[[^\]]+\]|[^:]+)(?::\d+)?$/.exec(address)?.[1] ?? address;
  if (token && !tls && !isLoopbackHost(host) && !args.flag('insecure-token')) {
    throw new InvalidArgumentError(
      `--coordinator ${address} is not loopback: the token would cross the network in clear text; pass --tls-ca (the coordinator's CA), or --insecure-token on a network you trust`,
    );
  }
  return { address, ...(token ? { token } : {}), ...(tls ? { tls } : {}) };
}

export const COORD_USAGE =
  'ferry coordinator [--listen 127.0.0.1:7070] [--state DIR] [--token T] [--tls-cert F --tls-key F [--tls-ca F]] [--insecure] [--lease-ms N] [--heartbeat-ms N] [--max-attempts N] [--max-checkpoint-mb 4096] [--checkpoint-idle-ms 60000] [--recovery-grace-ms 20000] [--nats URL]';

/** `ferry coordinator`: runs until SIGINT/SIGTERM; prints `listening on HOST:PORT` once bound. */
export async function coordinatorCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const args = Args.parse(
    argv,
    {
      listen: { type: 'string' },
      state: { type: 'string' },
      token: { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-ca': { type: 'string' },
      insecure: { type: 'boolean' },
      'lease-ms': { type: 'string' },
      'heartbeat-ms': { type: 'string' },
      'max-attempts': { type: 'string' },
      'max-checkpoint-mb': { type: 'string' },
      'checkpoint-idle-ms': { type: 'string' },
      'recovery-grace-ms': { type: 'string' },
      nats: { type: 'string' },
    },
    COORD_USAGE,
  );
  const nats = args.string('nats') ?? io.env['FERRY_NATS'];
  const cert = args.string('tls-cert');
  const key = args.string('tls-key');
  if ((cert === undefined) !== (key === undefined))
    throw new InvalidArgumentError('--tls-cert and --tls-key go together');
  const token = args.string('token') ?? io.env['FERRY_TOKEN'];
  const ca = args.string('tls-ca');
  const opts: CoordinatorOptions = {
    listen: args.string('listen') ?? '127.0.0.1:7070',
    stateDir: args.string('state') ?? path.join('.ferry', 'coordinator'),
    ...(token ? { token } : {}),
    ...(cert && key ? { tls: { cert, key, ...(ca ? { ca } : {}) } } : {}),
    insecure: args.flag('insecure'),
    ...(args.string('lease-ms') ? { leaseMs: args.int('lease-ms', 30_000, 100) } : {}),
    ...(args.string('heartbeat-ms') ? { heartbeatIntervalMs: args.int('heartbeat-ms', 2_000, 10) } : {}),
    ...(args.string('max-attempts') ? { maxAttempts: args.int('max-attempts', 3, 1) } : {}),
    ...(args.string('max-checkpoint-mb')
      ? { maxCheckpointBytes: args.int('max-checkpoint-mb', 4096, 1) * 2 ** 20 }
      : {}),
    ...(args.string('checkpoint-idle-ms') ? { checkpointIdleMs: args.int('checkpoint-idle-ms', 60_000, 100) } : {}),
    ...(args.string('recovery-grace-ms') ? { recoveryGraceMs: args.int('recovery-grace-ms', 20_000, 0) } : {}),
    ...(nats ? { nats: { url: nats } } : {}),
  };
  let coordinator: Coordinator;
  try {
    coordinator = await Coordinator.create(opts);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
  const address = await coordinator.run();
  out(io, `listening on ${address}`);
  err(io, `ferry coordinator: state in ${opts.stateDir}${token ? ', token required' : ''}${cert ? ', TLS' : ''}`);
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await coordinator.shutdown();
  return 0;
}

export const WORKER_USAGE =
  'ferry worker --coordinator HOST:PORT [--data-root data] [--work-dir .ferry/worker] [--backend B] [--gpus all] [--name N] [--token T] [--tls-ca F [--tls-cert F --tls-key F]] [--insecure-token] [--nats URL] [--peer-host HOST [--insecure-peer]] [--peer-port N] [--peer-advertise HOST] [--collective-deadline-ms N]';

/** `ferry worker`: one worker process, or with `--gpus all` one child per GPU pinned with CUDA_VISIBLE_DEVICES. */
export async function workerCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const args = Args.parse(
    argv,
    {
      ...CONNECTION_FLAGS,
      'data-root': { type: 'string' },
      'work-dir': { type: 'string' },
      backend: { type: 'string' },
      gpus: { type: 'string' },
      name: { type: 'string' },
      threads: { type: 'string' },
      'poll-ms': { type: 'string' },
      nats: { type: 'string' },
      'peer-host': { type: 'string' },
      'insecure-peer': { type: 'boolean' },
      'peer-port': { type: 'string' },
      'peer-advertise': { type: 'string' },
      'collective-deadline-ms': { type: 'string' },
    },
    WORKER_USAGE,
  );
  const nats = args.string('nats') ?? io.env['FERRY_NATS'];
  const workDir = args.string('work-dir') ?? path.join('.ferry', 'worker');
  if (args.string('gpus') !== undefined) {
    if (args.string('gpus') !== 'all') throw new InvalidArgumentError('--gpus takes "all"');
    const { gpus, reason } = await listNvidiaGpus();
    if (gpus.length === 0)
      throw new InvalidArgumentError(`--gpus all: no GPU found (${reason ?? 'nvidia-smi lists none'})`);
    const rest = argv.filter(
      (a, i) => a !== '--gpus' && argv[i - 1] !== '--gpus' && a !== '--work-dir' && argv[i - 1] !== '--work-dir',
    );
    const children = gpus.map((g) =>
      spawn(
        ferryBin()[0],
        [
          ferryBin()[1],
          'worker',
          ...rest,
          '--work-dir',
          path.join(workDir, `gpu${g.index}`),
          '--name',
          `${os.hostname()}-gpu${g.index}`,
        ],
        {
          env: { ...process.env, CUDA_VISIBLE_DEVICES: String(g.index) },
          stdio: 'inherit',
        },
      ),
    );
    const forward = (sig: NodeJS.Signals): void => children.forEach((c) => c.kill(sig));
    process.on('SIGINT', () => forward('SIGTERM'));
    process.on('SIGTERM', () => forward('SIGTERM'));
    const codes = await Promise.all(
      children.map((c) => new Promise<number>((r) => c.on('exit', (code) => r(code ?? 1)))),
    );
    return codes.every((c) => c === 0) ? 0 : 1;
  }
  const worker = await FerryWorker.create({
    connection: connectionFrom(args, io),
    dataRoot: args.string('data-root') ?? 'data',
    workDir,
    cacheDir: defaultCacheDir(io),
    backend: backendRequest(args.string('backend')),
    backendOptions: backendOptionsFromEnv(io),
    ...(args.string('name') ? { name: args.string('name')! } : {}),
    ...(args.string('threads') ? { decodeThreads: args.int('threads', 1, 1) } : {}),
    ...(args.string('poll-ms') ? { pollWaitMs: args.int('poll-ms', 10_000, 100) } : {}),
    ...(io.env['CUDA_VISIBLE_DEVICES'] ? { gpuIndex: Number(io.env['CUDA_VISIBLE_DEVICES']) } : {}),
    log: (line) => err(io, line),
    ...(nats ? { nats: { url: nats } } : {}),
    ...(args.string('peer-host') ? { peerHost: args.string('peer-host')! } : {}),
    ...(args.flag('insecure-peer') ? { peerInsecure: true } : {}),
    ...(args.string('peer-port') ? { peerPort: args.int('peer-port', 0, 0) } : {}),
    ...(args.string('peer-advertise') ? { peerAdvertise: args.string('peer-advertise')! } : {}),
    ...(args.string('collective-deadline-ms')
      ? { collectiveDeadlineMs: args.int('collective-deadline-ms', 60_000, 100) }
      : {}),
  });
  const stop = (): void => void worker.shutdown();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await worker.run();
  return 0;
}

export const SWEEP_USAGE = `ferry sweep <submit FILE [--data-root DIR] [--max-attempts N] | status SWEEP | results SWEEP [--format md|csv|json|html] [--alpha 0.05] | retry SWEEP | cancel SWEEP | list> [--coordinator HOST:PORT] [--token T] [--tls-ca F]`;

/** `--alpha`: the significance level a verdict needs (p < alpha), 0.05 unless given. */
export function significanceLevel(args: Args): number {
  const alpha = args.number('alpha', DEFAULT_ALPHA);
  if (!(alpha > 0 && alpha < 1)) throw new InvalidArgumentError(`--alpha must be between 0 and 1 (got ${alpha})`);
  return alpha;
}

/** The done cells of a sweep (with results) as the HTML report draws them. */
export function reportCells(s: SweepStatus): ReportCell[] {
  return s.cells.filter((c) => c.state === 'done').flatMap((c) => reportCell(c.spec!, c.result) ?? []);
}

export function outcomes(s: SweepStatus): CellOutcome[] {
  return s.cells
    .filter((c) => c.state === 'done' && c.result)
    .map((c) => {
      const r = summarizeResult(c.result!);
      const { valFraction, ...spec } = c.spec!;
      return {
        spec: { ...spec, valFraction: valFraction ?? null, color: spec.color as 'rgb' | 'gray' },
        bestValAccuracy: r.bestValAccuracy,
        bestEpoch: r.bestEpoch,
        wallMs: r.wallMs,
        imagesPerSec: r.imagesPerSec,
        ...(r.predictions ? { predictions: r.predictions } : {}),
      };
    });
}

/** `ferry sweep ...`: administration against a coordinator. */
export async function sweepCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  const args = Args.parse(
    rest,
    {
      ...CONNECTION_FLAGS,
      'data-root': { type: 'string' },
      format: { type: 'string' },
      alpha: { type: 'string' },
      'max-attempts': { type: 'string' },
    },
    SWEEP_USAGE,
  );
  const conn = connectionFrom(args, io);
  const admin = adminClient(conn);
  try {
    const ref = (): string => {
      const id = args.positionals[0];
      if (!id) throw new InvalidArgumentError(`which sweep? usage: ${SWEEP_USAGE}`);
      return id;
    };
    switch (sub) {
      case 'submit': {
        const file = ref();
        const yaml = await readFile(file, 'utf8').catch((e: Error) => {
          throw new InvalidArgumentError(`cannot read the sweep file ${file}: ${e.message}`);
        });
        const sweep = parseSweep(yaml, file);
        const fingerprints: Record<string, string> = {};
        const root = args.string('data-root');
        if (root)
          for (const c of sweep.cells)
            fingerprints[c.spec.dataset] ??= (await datasetFingerprint(path.resolve(root, c.spec.path))).fingerprint;
        const r = await unary(
          admin.submitSweep,
          admin,
          {
            yaml,
            fileName: path.basename(file),
            datasetFingerprints: fingerprints,
            maxAttempts: args.int('max-attempts', 0, 0),
          },
          conn,
          30_000,
        );
        out(io, `sweep ${r.sweepId}: ${r.cells} cells (${r.newCells} new)`);
        return 0;
      }
      case 'status': {
        const s = await getSweepAll(admin, conn, ref(), { withResults: false });
        out(
          io,
          `sweep ${s.sweepId} (${s.name}): ${s.done} done, ${s.running} running, ${s.pending} pending, ${s.failed} failed, ${s.cancelled} cancelled`,
        );
        out(
          io,
          table([
            [
              'CELL',
              'DATASET',
              'COLOR',
              'STRATEGY',
              'MODEL',
              'SEED',
              'STATE',
              'EPOCH',
              'ATTEMPTS',
              'WORKER',
              'BEST VAL',
              'ERROR',
            ],
            ...s.cells.map((c) => [
              c.cellId.slice(0, 10),
              c.spec!.dataset,
              c.spec!.color,
              c.spec!.strategy,
              c.spec!.model,
              String(c.spec!.seed),
              c.state,
              `${c.epoch}/${c.spec!.epochs}`,
              String(c.attempts),
              c.worker,
              c.state === 'done' ? `${(c.bestValAccuracy * 100).toFixed(1)}%` : '',
              c.error.slice(0, 80),
            ]),
          ]),
        );
        return 0;
      }
      case 'results': {
        const s = await getSweepAll(admin, conn, ref(), { withResults: true, timeoutMs: 60_000 });
        const t = resultsTable(outcomes(s), { alpha: significanceLevel(args) });
        const format = args.string('format') ?? 'md';
        if (format === 'csv') out(io, tableCsv(t));
        else if (format === 'json') out(io, JSON.stringify({ sweep: s.sweepId, table: t }, null, 2));
        else if (format === 'md') out(io, tableMarkdown(t));
        else if (format === 'html') out(io, resultsHtml(s.name, t, reportCells(s)));
        else throw new InvalidArgumentError(`--format must be md, csv, json or html (got ${format})`);
        if (s.done < s.cells.length)
          err(io, `note: ${s.cells.length - s.done} of ${s.cells.length} cells are not done`);
        return 0;
      }
      case 'retry':
      case 'cancel': {
        const fn = sub === 'retry' ? admin.retryFailed : admin.cancelSweep;
        const r = await unary(fn, admin, { sweepId: ref(), offset: 0, limit: 0, withResults: false }, conn, 10_000);
        out(io, `${sub === 'retry' ? 'requeued' : 'cancelled'} ${r.count} cell(s)`);
        return 0;
      }
      case 'list': {
        const r = await unary(admin.listSweeps, admin, {}, conn, 10_000);
        out(
          io,
          table([
            ['SWEEP', 'NAME', 'DONE', 'RUNNING', 'PENDING', 'FAILED', 'CREATED'],
            ...r.sweeps.map((s) => [
              s.sweepId,
              s.name,
              String(s.done),
              String(s.running),
              String(s.pending),
              String(s.failed),
              s.createdAt,
            ]),
          ]),
        );
        return 0;
      }
      default:
        throw new InvalidArgumentError(`unknown sweep command "${sub ?? ''}"\nusage: ${SWEEP_USAGE}`);
    }
  } catch (e) {
    throw ferryErrorFromGrpc(e, conn.address) ?? e;
  } finally {
    admin.close();
  }
}

export const HEALTH_USAGE =
  'ferry health [--coordinator HOST:PORT [--token T] [--tls-ca F]] | --dashboard URL | --worker [--work-dir DIR] [--max-age-s 60]';

/** `ferry health`: exit 0 when the component answers (container health checks and probes). */
export async function healthCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const args = Args.parse(
    argv,
    {
      ...CONNECTION_FLAGS,
      dashboard: { type: 'string' },
      worker: { type: 'boolean' },
      'work-dir': { type: 'string' },
      'max-age-s': { type: 'string' },
    },
    HEALTH_USAGE,
  );
  if (args.flag('worker')) {
    const file = path.join(args.string('work-dir') ?? path.join('.ferry', 'worker'), 'heartbeat');
    let age: number;
    try {
      age = (Date.now() - statSync(file).mtimeMs) / 1000;
    } catch {
      throw new InvalidArgumentError(`no heartbeat yet (${file})`);
    }
    const max = args.int('max-age-s', 60, 1);
    if (age > max)
      throw new InvalidArgumentError(`last heartbeat answered ${age.toFixed(0)} s ago (more than ${max} s)`);
    out(io, `worker ok (heartbeat ${age.toFixed(0)} s ago)`);
    return 0;
  }
  const dash = args.string('dashboard');
  if (dash) {
    const r = await fetch(dash, { signal: AbortSignal.timeout(5_000) }).catch((e: Error) => {
      throw new InvalidArgumentError(`${dash}: ${e.message}`);
    });
    if (!r.ok) throw new InvalidArgumentError(`${dash}: HTTP ${r.status}`);
    out(io, 'dashboard ok');
    return 0;
  }
  const conn = connectionFrom(args, io);
  const admin = adminClient(conn);
  try {
    await unary(admin.listSweeps, admin, {}, conn, 5_000);
  } catch (e) {
    throw new InvalidArgumentError(
      `coordinator at ${conn.address}: ${(e as { details?: string }).details ?? (e as Error).message}`,
    );
  } finally {
    admin.close();
  }
  out(io, 'coordinator ok');
  return 0;
}
