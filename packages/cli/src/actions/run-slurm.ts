import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { isLoopbackHost, splitHostPort } from '@ferry/common';
import type { SweepStatus } from '@ferry/protocol';
import { adminClient, unary, type ConnectionOptions } from '@ferry/client';
import { usageError } from '../kit.js';
import { ferryBin } from '../paths.js';
import { SlurmFleet } from '../slurm/fleet.js';
import { workerBatchScript } from '../slurm/script.js';
import { Slurm } from '../slurm/slurm.js';

/** `ferry run --slurm N`'s flags (commander's names). */
export interface SlurmRunFlags {
  readonly slurm?: number;
  readonly partition?: string;
  readonly account?: string;
  readonly qos?: string;
  readonly time?: string;
  readonly gres?: string;
  readonly cpusPerJob: number;
  readonly sbatch: readonly string[];
  readonly maxSubmissions?: number;
  readonly signalSeconds: number;
  readonly listen?: string;
  readonly advertise?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly tlsCa?: string;
  readonly insecure: boolean;
}

/** How the run's coordinator is reached: where it listens, its token, its TLS. */
export interface CoordinatorReach {
  readonly listen: string;
  /** The host clients and worker jobs dial (the bound port added); undefined: the bound address. */
  readonly advertise?: string;
  readonly tokenFile?: string;
  readonly token?: string;
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca: string };
  readonly insecure: boolean;
}

/** The embedded default: loopback, no token (nothing else on the machine is told the port). */
export const LOCAL_REACH: CoordinatorReach = { listen: '127.0.0.1:0', insecure: false };

/** The Slurm part of a run's plan, checked before anything starts. */
export interface SlurmPlan {
  readonly jobs: number;
  readonly maxSubmissions: number;
  readonly flags: SlurmRunFlags;
}

export function slurmPlan(o: SlurmRunFlags, localWorkersGiven: boolean): SlurmPlan | undefined {
  const slurmOnly = [
    'partition',
    'account',
    'qos',
    'time',
    'gres',
    'maxSubmissions',
    'listen',
    'advertise',
    'tlsCert',
    'tlsKey',
    'tlsCa',
  ] as const;
  if (o.slurm === undefined) {
    const stray =
      slurmOnly.find((k) => o[k] !== undefined) ?? (o.sbatch.length ? 'sbatch' : o.insecure ? 'insecure' : undefined);
    if (stray) throw usageError(`--${kebab(stray)} is a flag of --slurm: add --slurm <jobs>`);
    return undefined;
  }
  if (localWorkersGiven) throw usageError('--slurm <jobs> and --workers: give one (the workers are the Slurm jobs)');
  if (o.slurm < 1) throw usageError(`--slurm must be at least 1 (got ${o.slurm})`);
  const maxSubmissions = o.maxSubmissions ?? 3 * o.slurm;
  if (maxSubmissions < o.slurm)
    throw usageError(`--max-submissions ${maxSubmissions} is fewer than the ${o.slurm} jobs of --slurm`);
  if (o.time !== undefined && !/^(\d+-)?\d+(:\d+){0,2}$|^\d+-\d+$/.test(o.time))
    throw usageError(`--time ${o.time}: give sbatch's form (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)`);
  return { jobs: o.slurm, maxSubmissions, flags: o };
}

function kebab(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/**
 * The coordinator of a Slurm run: on every interface by default (the jobs run on other nodes),
 * with a fresh token in `<out>/slurm/token` (mode 600: the jobs read it from the shared file
 * system; it is never on a command line or in an environment), and TLS when given. A listen
 * address off loopback without TLS needs --insecure, as for `ferry coordinator`.
 */
export async function slurmReach(o: SlurmRunFlags, outRoot: string): Promise<CoordinatorReach> {
  const listen = o.listen ?? '0.0.0.0:0';
  let host: string;
  try {
    host = splitHostPort(listen).host;
  } catch {
    throw usageError(`--listen ${listen} is not host:port`);
  }
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw usageError('--tls-cert and --tls-key go together');
  if (!isLoopbackHost(host) && !o.tlsCert && !o.insecure)
    throw usageError(
      `--slurm: the coordinator listens on ${listen} for worker jobs on other nodes: pass --tls-cert and --tls-key (docs/operations.md, TLS), --insecure on a network you trust, or --listen 127.0.0.1:0 when the jobs run on this machine`,
    );
  const dir = path.join(outRoot, 'slurm');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString('hex');
  const tokenFile = path.join(dir, 'token');
  await writeFileAtomic(tokenFile, `${token}\n`, { mode: 0o600 });
  const wildcard = host === '0.0.0.0' || host === '::' || host === '[::]';
  return {
    listen,
    ...(o.advertise || wildcard ? { advertise: o.advertise ?? os.hostname() } : {}),
    tokenFile,
    token,
    ...(o.tlsCert && o.tlsKey ? { tls: { cert: o.tlsCert, key: o.tlsKey, ca: o.tlsCa ?? o.tlsCert } } : {}),
    insecure: o.insecure,
  };
}

/** What clients dial: the advertised host with the bound port, the token and the CA. */
export function clientConnection(bound: string, reach: CoordinatorReach): ConnectionOptions {
  const { port } = splitHostPort(bound);
  return {
    address: reach.advertise ? `${reach.advertise}:${port}` : bound,
    ...(reach.token ? { token: reach.token } : {}),
    ...(reach.tls ? { tls: { ca: reach.tls.ca } } : {}),
  };
}

/** The coordinator's flags for this reach. */
export function coordinatorReachArgs(reach: CoordinatorReach): string[] {
  return [
    ...(reach.tokenFile ? ['--token-file', reach.tokenFile] : []),
    ...(reach.tls ? ['--tls-cert', reach.tls.cert, '--tls-key', reach.tls.key] : []),
    ...(reach.insecure ? ['--insecure'] : []),
  ];
}

/** The run's workers, wherever they come from; `ferry run` asks after each look at the sweep. */
export interface RunWorkers {
  /** Throws when the sweep can no longer get a worker (a crash loop, Slurm's refusal). */
  check(s: SweepStatus): Promise<void>;
  /** Stops them (local children) or cancels them (Slurm jobs). */
  stop(): Promise<void>;
  /** For the start line: `2 local worker(s)`, `2 Slurm jobs (job 123)`. */
  readonly description: string;
}

export interface SlurmStart {
  readonly plan: SlurmPlan;
  readonly sweep: string;
  readonly outRoot: string;
  readonly dataRoot: string;
  readonly backend: string;
  readonly reach: CoordinatorReach;
  readonly conn: ConnectionOptions;
  /** A NATS server the jobs can reach (one given with --nats), or undefined. */
  readonly nats: string | undefined;
  readonly env: NodeJS.ProcessEnv;
  readonly say: (line: string) => void;
}

/**
 * A worker job whose coordinator has not answered for this long ends (frees its allocation): its
 * `ferry run` is gone (the login node's session ended) and could not cancel it. Longer than a
 * supervised coordinator's restart.
 */
const GIVE_UP_AFTER_MS = 10 * 60_000;

/** How often squeue is read. */
const POLL_MS = 3_000;

/**
 * Writes the batch script, submits the first array (an sbatch refusal is thrown as FERRY_ERR_SLURM
 * with Slurm's message), and returns the fleet that keeps it at N jobs and cancels it at the end.
 */
export async function startSlurmWorkers(s: SlurmStart): Promise<RunWorkers> {
  const f = s.plan.flags;
  const slurm = new Slurm(s.env);
  const [node, bin] = ferryBin();
  const gres = f.gres ?? ((await slurm.hasGpus(f.partition)) ? 'gpu:1' : undefined);
  const script = path.join(s.outRoot, 'slurm', 'worker.sbatch');
  await writeFileAtomic(
    script,
    workerBatchScript({
      sweep: s.sweep,
      node,
      bin,
      coordinator: s.conn.address,
      tokenFile: s.reach.tokenFile!,
      ...(s.reach.tls ? { tlsCa: s.reach.tls.ca } : {}),
      dataRoot: s.dataRoot,
      workRoot: path.join(s.outRoot, 'workers'),
      logDir: path.join(s.outRoot, 'logs'),
      backend: s.backend,
      ...(s.nats ? { nats: s.nats } : {}),
      ...(gres && gres !== 'none' ? { gres } : {}),
      cpusPerTask: f.cpusPerJob,
      ...(f.partition ? { partition: f.partition } : {}),
      ...(f.account ? { account: f.account } : {}),
      ...(f.time ? { time: f.time } : {}),
      ...(f.qos ? { qos: f.qos } : {}),
      signalSeconds: f.signalSeconds,
      giveUpAfterMs: GIVE_UP_AFTER_MS,
    }),
    { mode: 0o700 },
  );
  const fleet = new SlurmFleet(slurm, {
    jobs: s.plan.jobs,
    maxSubmissions: s.plan.maxSubmissions,
    script,
    sbatchArgs: f.sbatch,
    say: s.say,
  });
  await fleet.start();
  const admin = adminClient(s.conn);
  let last = 0;
  return {
    description: `${s.plan.jobs} Slurm job(s) (script ${script})`,
    check: async (sweep) => {
      if (Date.now() - last < POLL_MS) return;
      last = Date.now();
      const terminal = sweep.done + sweep.failed + sweep.cancelled + sweep.blocked;
      await fleet.poll(terminal < sweep.cells.length);
      // The jobs on the coordinator: `ferry sweep status` shows a pending job as a worker to come.
      // Sent every poll (cheap), so a restarted coordinator has them again within seconds.
      await unary(
        admin.reportJobs,
        admin,
        {
          jobs: fleet.jobs.map((j) => ({ jobId: j.label, state: j.state, reason: j.reason, node: j.node })),
        },
        s.conn,
        10_000,
      ).catch(() => undefined);
    },
    stop: async () => {
      admin.close();
      await fleet.stop();
    },
  };
}
