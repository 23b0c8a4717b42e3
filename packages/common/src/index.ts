/**
 * @ferry/common: what every process shares, defined once, with no dependencies and no I/O. Its
 * public names, by concern (each module's other exports are its own).
 */

// A cell: its specification, the table of its hyper-parameters, strategies, models, backends.
export {
  HYPER_PARAMETERS,
  HYPER_PARAMETER_DEFAULTS,
  HYPER_PARAMETER_NAMES,
  SOURCE_CELL_PREFIX,
  TRAINING_DEFAULTS,
  TRAINING_HYPER_PARAMETER_NAMES,
  cellLabel,
  hyperParameterProblem,
  hyperParameterRange,
  parseCellSpec,
  parseHyperParameters,
  sourceCellOf,
  trainingHyperParameters,
  waitingForSource,
  type CellSpec,
  type HyperParameterDefinition,
  type HyperParameterKind,
  type HyperParameterName,
  type HyperParameters,
  type TrainingHyperParameters,
} from './cell-spec.js';
export {
  STRATEGIES,
  STRATEGY_HINT,
  startsFromScratch,
  strategyDefinition,
  strategyLegend,
  strategyName,
  tryParseStrategy,
  type FrozenBatchNorm,
  type Strategy,
  type StrategyDefinition,
  type StrategyKind,
} from './strategy.js';
export { MODEL_NAMES, isModelName, type ModelName } from './models.js';
export { BACKEND_NAMES, type BackendName } from './backends.js';
export { CHECKPOINT_FORMAT } from './checkpoint.js';

// Errors: the one registry of codes, and their gRPC statuses and exit codes.
export {
  ERRORS,
  FerryError,
  GRPC_STATUS,
  exitCodeOf,
  grpcStatusOf,
  isErrorCode,
  isFerryError,
  retryOf,
  type ErrorCode,
  type ErrorDefinition,
  type GrpcStatusName,
} from './errors.js';

// Input limits (message sizes, list lengths) and their flags.
export { LIMITS, extractLimitFlags, limits, type LimitDefinition, type LimitName, type Limits } from './limits.js';

// Network addresses and secrets.
export { isLoopbackHost, splitHostPort } from './net.js';
export { sameSecret } from './secrets.js';

// The study's results: the comparison table (statistics) and its text (Markdown, CSV).
export {
  DEFAULT_ALPHA,
  formatP,
  resultsTable,
  sourceLabel,
  summarizeResult,
  type CellOutcome,
  type CellPredictions,
  type CellResultSummary,
  type ColorComparison,
  type Comparison,
  type ComparisonTest,
  type ResultsOptions,
  type ResultsRow,
  type ResultsTable,
  type TableCell,
  type WireCellResult,
} from './results.js';
export { bestEpochText, cellText, tableCsv, tableMarkdown } from './results-text.js';
export { mcnemarExact, pairedTTest, studentTwoSided, wilsonInterval } from './stats.js';

// The advisor: its rule, and its column in the table.
export {
  ADVICE_NOTE,
  ADVICE_RULE,
  advise,
  adviceLines,
  domainLevelOfShift,
  winnerOfMargin,
  type Advice,
  type AdviceInputs,
  type AdviceReason,
  type AdviceWinner,
  type DomainLevel,
} from './advice.js';
export {
  adviceAgrees,
  adviceRowKey,
  adviceText,
  rowAdviceOfWire,
  wireAdvice,
  type RowAdvice,
  type WireAdviceRow,
} from './advice-table.js';

export { FERRY_VERSION } from './version.js';
