import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, waitFor } from './cluster.js';

/**
 * A real one-node Slurm cluster of the test's own: munged with its own key and socket, slurmctld and
 * slurmd with their own ports, configuration and state under a temporary folder, run in the
 * foreground as children (so nothing outlives the tests) and stopped by `stop()`. Debian's
 * slurm-wlm and munge (scripts/test.sh installs them); as root, as Slurm's daemons need.
 */
export interface SlurmCluster {
  /** SLURM_CONF for every Slurm command and for `ferry run --slurm`. */
  readonly env: Record<string, string>;
  readonly dir: string;
  /** The node's name (this host's short name). */
  readonly node: string;
  /** Slurm's commands with this cluster's configuration: stdout. */
  run(command: string, args: readonly string[]): string;
  /** Jobs slurmctld still lists: `label|state|reason|node`. */
  queue(): string[];
  stop(): Promise<void>;
}

const SBIN = ['/usr/sbin', '/usr/bin'];

function which(name: string): string {
  for (const d of SBIN) if (existsSync(path.join(d, name))) return path.join(d, name);
  throw new Error(`${name} is not installed: apt-get install slurm-wlm munge (scripts/test.sh does)`);
}

export async function startSlurm(): Promise<SlurmCluster> {
  if (process.getuid?.() !== 0)
    throw new Error("the Slurm tests start slurmctld and slurmd of their own, which needs root (CI's machine is)");
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-slurm-'));
  chmodSync(dir, 0o755); // munged's socket folder must be reachable by its clients
  for (const d of ['state', 'spool', 'log', 'munge']) mkdirSync(path.join(dir, d), { recursive: true });
  const key = path.join(dir, 'munge', 'munge.key');
  writeFileSync(key, randomBytes(1024), { mode: 0o400 });
  chmodSync(path.join(dir, 'munge'), 0o755);
  const socket = path.join(dir, 'munge', 'socket');
  const node = os.hostname().split('.')[0]!;
  const [ctldPort, dPort] = [await freePort(), await freePort()];
  const conf = path.join(dir, 'slurm.conf');
  writeFileSync(
    conf,
    [
      'ClusterName=ferrytest',
      `SlurmctldHost=${node}`,
      'SlurmUser=root',
      'SlurmdUser=root',
      `SlurmctldPort=${ctldPort}`,
      `SlurmdPort=${dPort}`,
      'AuthType=auth/munge',
      'CredType=cred/munge',
      // cred_expire: also how long Slurm holds a requeued job back before it may start again (120 s by default).
      `AuthInfo=socket=${socket},cred_expire=10`,
      `StateSaveLocation=${dir}/state`,
      `SlurmdSpoolDir=${dir}/spool`,
      `SlurmctldPidFile=${dir}/slurmctld.pid`,
      `SlurmdPidFile=${dir}/slurmd.pid`,
      `SlurmctldLogFile=${dir}/log/slurmctld.log`,
      `SlurmdLogFile=${dir}/log/slurmd.log`,
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_Core',
      'SchedulerType=sched/backfill',
      'ReturnToService=2',
      'MpiDefault=none',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      // Ended jobs stay listed (squeue --states=all) for ten minutes: how ferry sees how they ended.
      'MinJobAge=600',
      'KillWait=10',
      'SlurmctldTimeout=30',
      'SlurmdTimeout=30',
      'InactiveLimit=0',
      `NodeName=${node} CPUs=${os.availableParallelism()} RealMemory=2000 State=UNKNOWN`,
      'PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP',
      // A partition whose limit a longer --time passes: such a job never starts.
      'PartitionName=short Nodes=ALL MaxTime=1 State=UP',
      '',
    ].join('\n'),
  );
  const env = { SLURM_CONF: conf };
  const children: ChildProcess[] = [];
  const daemon = (cmd: string, args: string[]): void => {
    const child = spawn(which(cmd), args, {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: false,
    });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => {
      if (code) process.stderr.write(`[slurm test cluster] ${cmd} exited with ${code}: ${err}\n`);
    });
    children.push(child);
  };
  daemon('munged', [
    '-F',
    '--force',
    `--socket=${socket}`,
    `--key-file=${key}`,
    `--log-file=${dir}/log/munged.log`,
    `--pid-file=${dir}/munge/pid`,
    `--seed-file=${dir}/munge/seed`,
  ]);
  await waitFor('munged', 10_000, async () => (existsSync(socket) ? true : undefined), 50);
  daemon('slurmctld', ['-D', '-i', '-f', conf]);
  daemon('slurmd', ['-D', '-f', conf]);
  const run = (command: string, args: readonly string[]): string =>
    execFileSync(which(command), [...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 30_000 });
  const stop = async (): Promise<void> => {
    try {
      run('scancel', ['--user=root']);
    } catch {
      // slurmctld already gone
    }
    for (const c of children.reverse()) {
      c.kill('SIGTERM');
      const ended = await Promise.race([
        new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(true) : c.once('exit', () => r(true)))),
        new Promise((r) => setTimeout(r, 10_000, false)),
      ]);
      if (!ended) c.kill('SIGKILL');
    }
  };
  try {
    await waitFor(
      'the test cluster node to be idle',
      60_000,
      async () => {
        try {
          return /idle/.test(run('sinfo', ['--noheader', '--format=%T', '--partition=debug'])) ? true : undefined;
        } catch {
          return undefined;
        }
      },
      250,
    );
  } catch (e) {
    const logs = ['slurmctld.log', 'slurmd.log']
      .map((f) => path.join(dir, 'log', f))
      .filter(existsSync)
      .map((f) => `${f}:\n${readFileSync(f, 'utf8').split('\n').slice(-15).join('\n')}`);
    await stop();
    throw new Error(`${(e as Error).message}\n${logs.join('\n')}`);
  }
  return {
    env,
    dir,
    node,
    run,
    queue: () =>
      run('squeue', ['--noheader', '--states=all', '--array', '--format=%i|%T|%r|%N'])
        .split('\n')
        .filter(Boolean)
        .map((l) => l.trim()),
    stop,
  };
}
