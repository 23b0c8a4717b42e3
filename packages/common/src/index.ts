/**
 * @ferry/common: definitions every ferry process shares (coordinator, worker, engine, dashboard,
 * CLI), with no dependencies and no I/O. Today: the training strategies and what each means.
 */
export * from './strategy.js';
