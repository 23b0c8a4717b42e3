/**
 * @ferry/common: definitions every ferry process shares (coordinator, worker, engine, dashboard,
 * CLI), with no dependencies and no I/O: the cell specification and its hyper-parameters, the error registry, the
 * model names, the training strategies and what each means, the loopback rule, the study's results table with its statistics, and the advisor's rule (finetune or freeze, predicted).
 */
export * from './advice.js';
export * from './advice-table.js';
export * from './backends.js';
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
