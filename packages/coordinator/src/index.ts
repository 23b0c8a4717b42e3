/** @ferry/coordinator: sweeps, scheduling and results. Never imports TensorFlow.js. */
export { SweepError } from './errors.js';
export { STUDY_DEFAULTS, cellId, parseSweep, type Cell, type CellSpec, type Sweep, type SweepLimits } from './sweep.js';
export { Coordinator, type CoordinatorLifecycle } from './coordinator.js';
export {
  CoordinatorConfigError,
  DEFAULT_TICK_MS,
  resolveCoordinatorOptions,
  type CoordinatorOptions,
  type ResolvedCoordinatorOptions,
} from './options.js';
export { fromProtoSpec, toProtoSpec } from './spec.js';
export { cellEvent, epochEvent, storeEvents, type SubjectEvent } from './events.js';
export { initialState, step } from './scheduler.js';
export type {
  CellEntry,
  CellState,
  SchedulerAction,
  SchedulerConfig,
  SchedulerEvent,
  SchedulerState,
  WorkerEntry,
} from './scheduler-types.js';
export { Store } from './store.js';
export { splitHostPort } from '@ferry/common';
