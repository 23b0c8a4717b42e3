import { execFile } from 'node:child_process';
import { FerryError } from '@ferry/common';

/**
 * A thin adapter over Slurm's commands (sbatch, squeue, scancel, sinfo): each call one process with
 * a time limit, its failure a FERRY_ERR_SLURM quoting Slurm's own message. Nothing here decides
 * anything (that is fleet.ts); the commands are the interface every Slurm site has (no REST daemon,
 * no library), so the same code runs on any cluster a user can submit to.
 */

/** A job (or one task of an array) as squeue reports it. */
export interface SlurmJob {
  /** The task's own id (squeue's %A): what `scancel` and the job's environment (SLURM_JOB_ID) name. */
  readonly jobId: string;
  /** `123_4` for task 4 of array 123, or the job id (squeue's %i). */
  readonly label: string;
  /** PENDING, RUNNING, COMPLETING, COMPLETED, TIMEOUT, CANCELLED, PREEMPTED, FAILED, NODE_FAIL, ... */
  readonly state: string;
  /** Why it waits or ended (Resources, Priority, TimeLimit, ...), None when there is nothing to say. */
  readonly reason: string;
  /** The node it runs on ('' while pending). */
  readonly node: string;
}

/** States of a job that still holds (or waits for) its place: it is counted as a worker to come. */
const ACTIVE = new Set([
  'PENDING',
  'CONFIGURING',
  'RUNNING',
  'COMPLETING',
  'REQUEUED',
  'REQUEUE_HOLD',
  'REQUEUE_FED',
  'RESIZING',
  'SIGNALING',
  'STAGE_OUT',
  'SUSPENDED',
  'STOPPED',
]);

export function isActive(job: SlurmJob): boolean {
  return ACTIVE.has(job.state);
}

export type Exec = (
  command: string,
  args: readonly string[],
  options: { readonly env: NodeJS.ProcessEnv; readonly timeoutMs: number },
) => Promise<{ stdout: string; stderr: string }>;

const execProcess: Exec = (command, args, options) =>
  new Promise((resolve, reject) => {
    execFile(
      command,
      [...args],
      { env: options.env, timeout: options.timeoutMs, maxBuffer: 16 * 2 ** 20 },
      (error, stdout, stderr) => {
        if (error) reject(Object.assign(error, { stdout, stderr }));
        else resolve({ stdout, stderr });
      },
    );
  });

/** squeue's fields, `|`-separated (no field of these holds one). */
const SQUEUE_FORMAT = '%A|%i|%T|%r|%N';

export class Slurm {
  constructor(
    private readonly env: NodeJS.ProcessEnv = process.env,
    private readonly exec: Exec = execProcess,
    private readonly timeoutMs = 60_000,
  ) {}

  private async run(command: string, args: readonly string[], what: string): Promise<string> {
    try {
      return (await this.exec(command, args, { env: this.env, timeoutMs: this.timeoutMs })).stdout;
    } catch (e) {
      const x = e as NodeJS.ErrnoException & { stderr?: string; killed?: boolean };
      const said = (x.stderr ?? '').trim();
      if (x.code === 'ENOENT')
        throw new FerryError(
          'FERRY_ERR_SLURM',
          `${command} is not on PATH: run ferry --slurm where Slurm's commands are (a login node), or load Slurm's module first`,
        );
      if (x.killed)
        throw new FerryError(
          'FERRY_ERR_SLURM',
          `${what}: ${command} did not answer within ${this.timeoutMs / 1000} s (is slurmctld up? scontrol ping)`,
        );
      throw new FerryError('FERRY_ERR_SLURM', `${what}: ${said || x.message}`);
    }
  }

  /** Submits `script` with `args` (sbatch's own flags, before the script); the job (array) id. */
  async submit(script: string, args: readonly string[]): Promise<string> {
    const out = await this.run('sbatch', ['--parsable', ...args, script], 'Slurm refused the worker jobs');
    // --parsable prints "<id>" or "<id>;<cluster>".
    const id = /^(\d+)(?:;\S+)?\s*$/m.exec(out)?.[1];
    if (!id) throw new FerryError('FERRY_ERR_SLURM', `sbatch printed no job id: ${out.trim() || '(nothing)'}`);
    return id;
  }

  /**
   * The jobs of these ids (arrays expand to their tasks), ended ones included while slurmctld still
   * remembers them (MinJobAge, 5 minutes by default): a job absent from the answer has ended.
   */
  async jobs(ids: readonly string[]): Promise<SlurmJob[]> {
    if (ids.length === 0) return [];
    const out = await this.run(
      'squeue',
      ['--noheader', '--states=all', '--array', `--jobs=${ids.join(',')}`, `--format=${SQUEUE_FORMAT}`],
      'squeue failed',
    ).catch((e: FerryError) => {
      // squeue refuses a list whose every job has been forgotten ("Invalid job id specified").
      if (/invalid job id/i.test(e.message)) return '';
      throw e;
    });
    return parseSqueue(out);
  }

  /** Cancels these jobs (whole arrays by their id); jobs already ended are no error. */
  async cancel(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.run('scancel', [...ids], 'scancel failed');
  }

  /** Whether the nodes of `partition` (the default one when undefined) have GPUs (a gres of type gpu). */
  async hasGpus(partition: string | undefined): Promise<boolean> {
    const out = await this.run(
      'sinfo',
      ['--noheader', '--format=%G', ...(partition ? [`--partition=${partition}`] : [])],
      'sinfo failed',
    );
    return out.split('\n').some((g) => /(^|,)gpu[:(]/.test(g.trim()));
  }
}

/** squeue's lines (SQUEUE_FORMAT) as jobs; a line of another shape is skipped. */
export function parseSqueue(out: string): SlurmJob[] {
  const jobs: SlurmJob[] = [];
  for (const line of out.split('\n')) {
    const f = line.trim().split('|');
    if (f.length !== 5 || !/^\d+$/.test(f[0]!)) continue;
    jobs.push({ jobId: f[0]!, label: f[1]!, state: f[2]!.replace(/\+$/, ''), reason: f[3]!, node: f[4]! });
  }
  return jobs;
}
