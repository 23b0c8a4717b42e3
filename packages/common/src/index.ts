/**
 * @ferry/common: definitions every ferry process shares (coordinator, worker, engine, dashboard,
 * CLI), with no dependencies and no I/O: the training strategies and what each means, and the
 * statistics of the study's answer.
 */
export * from './net.js';
export * from './results.js';
export * from './stats.js';
export * from './strategy.js';
