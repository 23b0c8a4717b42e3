import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError, listNvidiaGpus } from '@ferry/core';
import { FerryWorker, type WorkerOptions } from '@ferry/worker';
import { backendOptionsFromEnv, backendRequest } from '../backend-env.js';
import { connectionFrom } from '../connection.js';
import { err, type CliIo } from '../io.js';
import type { ConnectionFlags } from '../kit.js';
import { defaultCacheDir, ferryBin } from '../paths.js';

export interface WorkerFlags extends ConnectionFlags {
  readonly dataRoot: string;
  readonly workDir: string;
  readonly backend: string;
  readonly gpus?: string;
  readonly name?: string;
  readonly threads?: number;
  readonly pollMs: number;
  readonly nats?: string;
  readonly peerHost?: string;
  readonly insecurePeer: boolean;
  readonly peerPort: number;
  readonly peerAdvertise?: string;
  readonly collectiveDeadlineMs: number;
  readonly giveUpAfterMs?: number;
}

/** `ferry worker`: one worker process, or with `--gpus all` one child per GPU pinned with CUDA_VISIBLE_DEVICES. */
export async function workerCommand(o: WorkerFlags, argv: readonly string[], io: CliIo): Promise<number> {
  if (o.gpus !== undefined) return workerPerGpu(o, argv);
  const worker = await FerryWorker.create(workerOptions(o, io));
  const stop = (): void => void worker.shutdown();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await worker.run();
  return 0;
}

function workerOptions(o: WorkerFlags, io: CliIo): WorkerOptions {
  const nats = o.nats ?? io.env['FERRY_NATS'];
  return {
    connection: connectionFrom(o, io),
    dataRoot: o.dataRoot,
    workDir: o.workDir,
    cacheDir: defaultCacheDir(io),
    backend: backendRequest(o.backend),
    // A worker pinned to one GPU (CUDA_VISIBLE_DEVICES) sees it as cuda:0.
    backendOptions: { ...(io.env['CUDA_VISIBLE_DEVICES'] ? { torchGpu: 0 } : {}), ...backendOptionsFromEnv(io) },
    ...(o.name ? { name: o.name } : {}),
    ...(o.threads !== undefined ? { decodeThreads: o.threads } : {}),
    pollWaitMs: o.pollMs,
    ...(io.env['CUDA_VISIBLE_DEVICES'] ? { gpuIndex: Number(io.env['CUDA_VISIBLE_DEVICES']) } : {}),
    ...slurmJobOf(io.env),
    log: (line) => err(io, line),
    ...(nats ? { nats: { url: nats } } : {}),
    ...(o.peerHost ? { peerHost: o.peerHost } : {}),
    ...(o.insecurePeer ? { peerInsecure: true } : {}),
    peerPort: o.peerPort,
    ...(o.peerAdvertise ? { peerAdvertise: o.peerAdvertise } : {}),
    collectiveDeadlineMs: o.collectiveDeadlineMs,
    ...(o.giveUpAfterMs !== undefined ? { giveUpAfterMs: o.giveUpAfterMs } : {}),
  };
}

/** A worker started by Slurm says which job it is: `123_4` (task 4 of array 123), or the job id. */
export function slurmJobOf(env: Readonly<Record<string, string | undefined>>): { slurmJob?: string } {
  const array = env['SLURM_ARRAY_JOB_ID'];
  const task = env['SLURM_ARRAY_TASK_ID'];
  const job = array && task ? `${array}_${task}` : env['SLURM_JOB_ID'];
  return job ? { slurmJob: job } : {};
}

/** `--gpus all`: a child `ferry worker` per GPU, each with its own work folder and name. */
async function workerPerGpu(o: WorkerFlags, argv: readonly string[]): Promise<number> {
  if (o.gpus !== 'all') throw new InvalidArgumentError('--gpus takes "all"');
  const { gpus, reason } = await listNvidiaGpus();
  if (gpus.length === 0)
    throw new InvalidArgumentError(`--gpus all: no GPU found (${reason ?? 'nvidia-smi lists none'})`);
  const rest = argv.filter(
    (a, i) => a !== '--gpus' && argv[i - 1] !== '--gpus' && a !== '--work-dir' && argv[i - 1] !== '--work-dir',
  );
  const [node, bin] = ferryBin();
  const children = gpus.map((g) =>
    spawn(
      node,
      [
        bin,
        'worker',
        ...rest,
        '--work-dir',
        path.join(o.workDir, `gpu${g.index}`),
        '--name',
        `${os.hostname()}-gpu${g.index}`,
      ],
      { env: { ...process.env, CUDA_VISIBLE_DEVICES: String(g.index) }, stdio: 'inherit' },
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
