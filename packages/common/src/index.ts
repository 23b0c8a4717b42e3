/**
 * @ferry/common: definitions every ferry process shares (coordinator, worker, engine, dashboard,
 * CLI), with no dependencies and no I/O: the cell specification and its hyper-parameters, the error registry, the
 * model names, the training strategies and what each means, the loopback rule, and the study's results table with its statistics.
 */
export * from './advice.js';
export * from './cell-spec.js';
export * from './checkpoint.js';
export * from './errors.js';
export * from './limits.js';
export * from './models.js';
export * from './net.js';
export * from './results.js';
export * from './secrets.js';
export * from './stats.js';
export * from './strategy.js';
