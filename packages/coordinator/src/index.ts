/** @ferry/coordinator: sweeps, scheduling and results. Never imports TensorFlow.js. */
export { SweepError } from './errors.js';
export { STUDY_DEFAULTS, cellId, parseSweep, type Cell, type CellSpec, type Sweep } from './sweep.js';
export { resultsTable, tableCsv, tableMarkdown, type CellOutcome, type ResultsTable, type TableCell } from './results.js';
