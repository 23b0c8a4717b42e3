/** @ferry/coordinator: sweeps, scheduling and results. Never imports TensorFlow.js. */
export { SweepError } from './errors.js';
export { DEFAULT_SWEEP_LIMITS, STUDY_DEFAULTS, cellId, parseSweep, type Cell, type CellSpec, type Sweep, type SweepLimits } from './sweep.js';
export { Coordinator, CoordinatorConfigError, fromProtoSpec, resolveCoordinatorOptions, toProtoSpec, type CoordinatorLifecycle, type CoordinatorOptions, type ResolvedCoordinatorOptions } from './coordinator.js';
export { initialState, step, type CellEntry, type CellState, type SchedulerAction, type SchedulerConfig, type SchedulerEvent, type SchedulerState, type WorkerEntry } from './scheduler.js';
export { Store } from './store.js';
export { splitHostPort } from './net.js';
