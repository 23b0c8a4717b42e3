import type { Checkpoints } from './checkpoints.js';
import type { EventFeed } from './feed.js';
import type { ResolvedCoordinatorOptions } from './options.js';
import type { CellEntry, SchedulerAction, SchedulerEvent, SchedulerState } from './scheduler-types.js';
import type { Store } from './store.js';

/**
 * What the coordinator's services (worker, admin) work with: the options, the store, the
 * scheduler's current state, and `apply`, the one way state changes (step, persist, publish).
 */
export interface CoordinatorHost {
  readonly options: ResolvedCoordinatorOptions;
  readonly store: Store;
  readonly state: SchedulerState;
  readonly feed: EventFeed;
  readonly checkpoints: Checkpoints;
  apply(event: SchedulerEvent): readonly SchedulerAction[];
  /** The running cell an attempt holds the lease of (undefined for a stale or unknown attempt). */
  cellByAttempt(attemptId: string): CellEntry | undefined;
  /** A worker as users read it: its name, or its id. */
  workerName(workerId: string | null): string;
}
