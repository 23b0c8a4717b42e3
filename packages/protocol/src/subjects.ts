/**
 * NATS subject names (data, not logic). Tokens are sweep ids, cell ids and worker ids, which
 * contain only [A-Za-z0-9_-].
 */
export const STREAM_NAME = 'FERRY';
export const STREAM_SUBJECTS = ['ferry.>'];

export const SUBJECTS = {
  /** Everything of one sweep: `ferry.<sweep>.>` */
  sweepAll: (sweep: string): string => `ferry.${sweep}.>`,
  sweep: (sweep: string): string => `ferry.${sweep}.sweep`,
  cell: (sweep: string, cell: string): string => `ferry.${sweep}.cell.${cell}.status`,
  step: (sweep: string, cell: string): string => `ferry.${sweep}.cell.${cell}.step`,
  epoch: (sweep: string, cell: string): string => `ferry.${sweep}.cell.${cell}.epoch`,
  /** The advisor's predictions for the sweep's rows. */
  advice: (sweep: string): string => `ferry.${sweep}.advice`,
  /** Worker heartbeats and state; `_cluster` when not tied to a sweep. */
  worker: (sweep: string, worker: string): string => `ferry.${sweep}.worker.${worker}`,
  /** A batch job of the workers (Slurm: `123_4`). */
  job: (sweep: string, job: string): string => `ferry.${sweep}.job.${job.replace(/[^A-Za-z0-9_-]/g, '-')}`,
  /** A child process of `ferry run` (its name, made a subject token). */
  process: (sweep: string, name: string): string => `ferry.${sweep}.process.${name.replace(/[^A-Za-z0-9_-]/g, '-')}`,
  CLUSTER: '_cluster',
} as const;
