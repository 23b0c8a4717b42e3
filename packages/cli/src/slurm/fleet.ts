import { FerryError } from '@ferry/common';
import { isActive, type Slurm, type SlurmJob } from './slurm.js';

/**
 * `ferry run --slurm N`'s workers: N tasks of one `sbatch --array`, kept at N while the sweep has
 * work. A task that ends (its time limit, preemption, `scancel`, a node failure) is normal on a
 * shared cluster: its cell goes back to the coordinator (the lease, or the worker's release on
 * SIGTERM) and resumes from its last checkpoint on another worker, and a replacement is submitted,
 * up to a limit on submissions so that a node that kills every job cannot make ferry submit forever.
 */

/** Pending reasons that never clear by waiting: the job cannot run as submitted. */
const NEVER_STARTS =
  /^(InvalidAccount|InvalidQOS|AccountNotAllowed|QOSNotAllowed|BadConstraints|PartitionTimeLimit|PartitionNodeLimit|AssocMaxWallDurationPerJobLimit|QOSMaxWallDurationPerJobLimit)$/;

/** How many tasks to submit now: back to `requested` while work is left, within what the limit leaves. */
export function tasksToSubmit(o: {
  readonly requested: number;
  readonly active: number;
  readonly submitted: number;
  readonly maxSubmissions: number;
  readonly workLeft: boolean;
}): number {
  if (!o.workLeft) return 0;
  return Math.max(0, Math.min(o.requested - o.active, o.maxSubmissions - o.submitted));
}

/** A job's state as the user reads it: `PENDING (Resources)`, `RUNNING on node1`, `TIMEOUT (TimeLimit)`. */
export function describeJob(j: Pick<SlurmJob, 'state' | 'reason' | 'node'>): string {
  if (j.state === 'RUNNING') return `RUNNING on ${j.node}`;
  return j.reason && j.reason !== 'None' ? `${j.state} (${j.reason})` : j.state;
}

export interface FleetOptions {
  /** Tasks wanted at once (one worker each). */
  readonly jobs: number;
  /** Tasks submitted in all, replacements included. */
  readonly maxSubmissions: number;
  /** The batch script (script.ts) and sbatch's flags for every submission (partition, account, ...). */
  readonly script: string;
  readonly sbatchArgs: readonly string[];
  /** Each change of a job's state, as a line for the terminal. */
  readonly say: (line: string) => void;
  /** How long a task just submitted counts as active before squeue lists it. */
  readonly graceMs?: number;
  /** How long Slurm's commands may keep failing (a busy or restarting slurmctld) before the run gives up. */
  readonly outageMs?: number;
}

const OUTAGE_MS = 5 * 60_000;

interface Submission {
  readonly id: string;
  readonly tasks: number;
  readonly at: number;
}

export class SlurmFleet {
  private readonly submissions: Submission[] = [];
  private readonly seen = new Map<string, SlurmJob>();
  private submittedTasks = 0;
  private stopped = false;
  private failingSince: number | null = null;

  constructor(
    private readonly slurm: Slurm,
    private readonly o: FleetOptions,
  ) {}

  /** Every job id submitted (arrays), for `scancel`. */
  get jobIds(): readonly string[] {
    return this.submissions.map((s) => s.id);
  }

  get jobs(): readonly SlurmJob[] {
    return [...this.seen.values()];
  }

  /** The first array; a refusal by sbatch (bad partition, account, QoS) is thrown with Slurm's message. */
  async start(): Promise<void> {
    await this.submit(this.o.jobs, '');
  }

  private async submit(tasks: number, why: string): Promise<void> {
    const id = await this.slurm.submit(this.o.script, [`--array=0-${tasks - 1}`, ...this.o.sbatchArgs]);
    this.submissions.push({ id, tasks, at: Date.now() });
    this.submittedTasks += tasks;
    this.o.say(
      `slurm: submitted job ${id} (${tasks} worker task${tasks === 1 ? '' : 's'}${why}; ${this.submittedTasks} of at most ${this.o.maxSubmissions} submitted)`,
    );
  }

  /**
   * One round: reads the jobs' states, says what changed, and submits replacements while the sweep
   * has work. Throws FERRY_ERR_SLURM when the sweep cannot get a worker any more: every task ended
   * and the limit is spent, or a task waits for a reason that never clears.
   */
  async poll(workLeft: boolean): Promise<void> {
    if (this.stopped) return;
    const jobs = await this.tolerating(() => this.slurm.jobs(this.jobIds));
    if (!jobs) return;
    const now = Date.now();
    const listed = new Set<string>();
    const ended: string[] = [];
    for (const j of jobs) {
      const arrayId = /^(\d+)/.exec(j.label)?.[1] ?? j.jobId;
      listed.add(arrayId);
      const before = this.seen.get(j.label);
      this.seen.set(j.label, j);
      if (before && describeJob(before) === describeJob(j)) continue;
      this.o.say(`slurm: job ${j.label} ${describeJob(j)}`);
      if (before && isActive(before) && !isActive(j)) ended.push(j.label);
      if (j.state === 'PENDING' && NEVER_STARTS.test(j.reason))
        throw new FerryError(
          'FERRY_ERR_SLURM',
          `Slurm will not start job ${j.label}: ${j.reason} (squeue's reason); fix the flags given to --slurm (--partition, --account, --qos, --time, --sbatch) and run again`,
        );
    }
    // Tasks still active, and those just submitted that squeue does not list yet.
    const grace = this.o.graceMs ?? 30_000;
    const active =
      jobs.filter(isActive).length +
      this.submissions.filter((s) => !listed.has(s.id) && now - s.at < grace).reduce((n, s) => n + s.tasks, 0);
    const more = tasksToSubmit({
      requested: this.o.jobs,
      active,
      submitted: this.submittedTasks,
      maxSubmissions: this.o.maxSubmissions,
      workLeft,
    });
    if (more > 0)
      await this.tolerating(() =>
        this.submit(more, ended.length ? `, replacing ${ended.join(', ')}` : ', replacing ended tasks'),
      );
    else if (workLeft && active === 0 && this.submittedTasks >= this.o.maxSubmissions)
      throw new FerryError(
        'FERRY_ERR_SLURM',
        `every worker job ended and the ${this.o.maxSubmissions} submissions --max-submissions allows are spent, with the sweep unfinished: ${this.jobs.map((j) => `${j.label} ${describeJob(j)}`).join(', ')}; their logs say why`,
      );
  }

  /**
   * A Slurm command during the run: a failure (slurmctld busy or restarting, a submit limit for the
   * moment) is said once and tried again at the next poll; only one that lasts outageMs ends the run.
   */
  private async tolerating<T>(fn: () => Promise<T>): Promise<T | undefined> {
    try {
      const r = await fn();
      if (this.failingSince !== null) this.o.say('slurm: answering again');
      this.failingSince = null;
      return r;
    } catch (e) {
      const outage = this.o.outageMs ?? OUTAGE_MS;
      const now = Date.now();
      if (this.failingSince === null) {
        this.failingSince = now;
        this.o.say(`slurm: ${(e as Error).message}; trying again (for up to ${Math.round(outage / 1000)} s)`);
      }
      if (now - this.failingSince >= outage) throw e;
      return undefined;
    }
  }

  /** Cancels every job submitted (the sweep ended, Ctrl-C, or an error): nothing stays queued. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.jobIds.length === 0) return;
    // Every array, ended tasks included: scancel of a job that has ended is no error.
    await this.slurm.cancel(this.jobIds);
    this.o.say(`slurm: cancelled job${this.jobIds.length === 1 ? '' : 's'} ${this.jobIds.join(', ')}`);
  }
}
