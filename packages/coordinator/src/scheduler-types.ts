import type { CellSpec } from './sweep.js';

/** The scheduler's state, events and actions (scheduler.ts decides with them). */

/**
 * `blocked`: a cell of a later stage whose source cell failed, was cancelled or is blocked itself;
 * it never ran (not a failure of its own) and is pending again when its source is retried. A
 * pending cell whose source is not done yet waits for it (it is never assigned before).
 */
export type CellState = 'pending' | 'running' | 'done' | 'failed' | 'cancelled' | 'blocked';

/** The states a cell ends in: a sweep is finished when every cell is in one. */
export const FINAL_STATES: readonly CellState[] = ['done', 'failed', 'cancelled', 'blocked'];

export interface CellEntry {
  readonly id: string;
  readonly spec: CellSpec;
  readonly sweepIds: readonly string[];
  readonly state: CellState;
  /** Attempts started so far (a released attempt, e.g. on SIGTERM, is not counted). */
  readonly attempts: number;
  readonly maxAttempts: number;
  readonly attemptId: string | null;
  /** Rank 0 of the running attempt (the worker that reports the result). */
  readonly workerId: string | null;
  /** Every worker of the running attempt, by rank (one for a single-worker cell). */
  readonly members: readonly string[];
  /** Increments each time a (gang) attempt starts: a re-formed group is a new generation. */
  readonly generation: number;
  /** When a gang cell first waited for enough idle workers (null: not waiting). */
  readonly waitingSince: number | null;
  readonly leaseUntil: number;
  /** Epochs in the checkpoint the coordinator holds. */
  readonly checkpointEpochs: number;
  readonly epoch: number;
  readonly error: string | null;
  /** Submission order, for first-in first-out scheduling. */
  readonly seq: number;
  /** Workers that reported a dataset mismatch for this cell: not offered it again. */
  readonly excludedWorkers: readonly string[];
}

export interface WorkerEntry {
  readonly id: string;
  readonly name: string;
  readonly sessionId: string;
  readonly backend: string;
  readonly device: string;
  readonly lastSeen: number;
  readonly state: 'alive' | 'lost';
  /** Since when the worker has been polling with nothing to run (null: busy or not polling). */
  readonly idleSince: number | null;
  /** host:port of the worker's ring link (data-parallel groups); empty when it has none. */
  readonly peerAddress: string;
  /** The host it runs on, and its Slurm job ("123_4"; empty outside Slurm). */
  readonly host: string;
  readonly slurmJob: string;
  /** The ferry version the worker runs (its package.json's; empty from a worker too old to say). */
  readonly ferryVersion: string;
}

export interface SchedulerConfig {
  readonly leaseMs: number;
  readonly heartbeatIntervalMs: number;
  readonly defaultMaxAttempts: number;
  /**
   * How long a gang cell (`workers: k`) lets single-worker cells take idle workers before it holds
   * them back for itself; after twice this, with fewer than k capable workers alive, it fails.
   */
  readonly gangTimeoutMs: number;
}

export interface SchedulerState {
  readonly config: SchedulerConfig;
  /** In submission order (Map insertion order = seq order). */
  readonly cells: ReadonlyMap<string, CellEntry>;
  readonly workers: ReadonlyMap<string, WorkerEntry>;
  /** Running attempt -> its cell id. */
  readonly byAttempt: ReadonlyMap<string, string>;
  /** Worker -> the cell it runs. */
  readonly byWorker: ReadonlyMap<string, string>;
  readonly nextSeq: number;
  /**
   * After a coordinator restart: until this time no worker is declared lost and no recovered lease
   * expires, so that workers backing off have time to reconnect and claim their cells (0: none).
   */
  readonly recoveringUntil: number;
}

/** A coordinator restarted from its store: when it started and how long workers have to come back. */
export interface Recovery {
  readonly now: number;
  readonly graceMs: number;
}

export interface RunningClaim {
  readonly cellId: string;
  readonly attemptId: string;
  readonly epoch: number;
}

export type SchedulerEvent =
  | {
      readonly type: 'submit';
      readonly now: number;
      readonly sweepId: string;
      readonly cells: readonly { id: string; spec: CellSpec }[];
      readonly maxAttempts?: number;
    }
  | {
      readonly type: 'register';
      readonly now: number;
      readonly workerId: string;
      readonly name: string;
      readonly sessionId: string;
      readonly backend: string;
      readonly device: string;
      readonly running: readonly RunningClaim[];
      readonly peerAddress?: string;
      readonly host?: string;
      readonly slurmJob?: string;
      readonly ferryVersion?: string;
    }
  | {
      readonly type: 'heartbeat';
      readonly now: number;
      readonly workerId: string;
      readonly sessionId: string;
      readonly running: readonly RunningClaim[];
    }
  | {
      readonly type: 'poll';
      readonly now: number;
      readonly workerId: string;
      readonly sessionId: string;
      readonly newAttemptId: string;
    }
  | { readonly type: 'epoch'; readonly now: number; readonly attemptId: string; readonly epoch: number }
  | { readonly type: 'checkpoint'; readonly now: number; readonly attemptId: string; readonly epochsDone: number }
  | { readonly type: 'complete'; readonly now: number; readonly attemptId: string }
  | {
      readonly type: 'fail';
      readonly now: number;
      readonly attemptId: string;
      readonly message: string;
      readonly retryable: boolean;
      readonly excludeWorker?: boolean;
    }
  | { readonly type: 'release'; readonly now: number; readonly attemptId: string; readonly reason: string }
  | { readonly type: 'tick'; readonly now: number }
  | { readonly type: 'cancel'; readonly now: number; readonly sweepId: string }
  | { readonly type: 'retry'; readonly now: number; readonly sweepId: string };

export type SchedulerAction =
  | {
      readonly type: 'assign';
      readonly workerId: string;
      readonly cellId: string;
      readonly attemptId: string;
      readonly rank: number;
      readonly members: readonly string[];
      readonly generation: number;
    }
  /** Persist the cell's row. */
  | { readonly type: 'saveCell'; readonly cell: CellEntry }
  | { readonly type: 'saveWorker'; readonly worker: WorkerEntry }
  | {
      readonly type: 'attemptStarted';
      readonly attemptId: string;
      readonly cellId: string;
      readonly workerId: string;
      readonly at: number;
    }
  | {
      readonly type: 'attemptEnded';
      readonly attemptId: string;
      readonly outcome: 'done' | 'failed' | 'lost' | 'released' | 'cancelled';
      readonly error: string | null;
      readonly at: number;
    }
  /** Tell a worker to stop an attempt (in its next heartbeat response). */
  | { readonly type: 'stopAttempt'; readonly workerId: string; readonly attemptId: string }
  /** The worker's session is unknown: it must register again. */
  | { readonly type: 'reregister'; readonly workerId: string }
  /** A request referred to an attempt the coordinator no longer leases (stale worker). */
  | { readonly type: 'rejected'; readonly attemptId: string; readonly reason: string };

export interface StepResult {
  readonly state: SchedulerState;
  readonly actions: readonly SchedulerAction[];
}
