/**
 * What a frozen part of the network does with its BatchNorm layers. Only the weights of a frozen
 * layer are fixed; its BatchNorm statistics can still follow the target data, and which of these a
 * "freeze" means changes the answer on data far from the backbone's source (docs/freeze.md):
 *
 * - `train`: training mode, as the study's PyTorch code runs it (`requires_grad = False` on the
 *   backbone, `model.train()` kept): each batch is normalised with its own statistics and the
 *   running statistics move to the target data (momentum 0.1).
 * - `source`: inference mode with the statistics that came with the weights (a linear probe).
 * - `adapted`: one pass over the target's training images in training mode, without gradients,
 *   sets the running statistics to the cumulative average of the batch statistics (torch's
 *   `momentum=None`); then inference mode, as `source`.
 */
export type FrozenBatchNorm = 'train' | 'source' | 'adapted';

/** Which stages learn, and how the frozen ones normalise. */
export type Strategy =
  | { readonly kind: 'finetune' }
  | { readonly kind: 'freeze' }
  | { readonly kind: 'freezeUntil'; readonly stage: string }
  | { readonly kind: 'probe' }
  | { readonly kind: 'adapt' }
  | { readonly kind: 'scratch' };

export type StrategyKind = Strategy['kind'];

export interface StrategyDefinition {
  /** One line for a results table's legend: what the strategy trains and how it normalises. */
  readonly summary: string;
  /** How the frozen stages treat BatchNorm; null when nothing is frozen. */
  readonly frozenBatchNorm: FrozenBatchNorm | null;
  /**
   * The frozen stages compute a fixed function of each (augmented) image, so their output can be
   * computed once and cached. Not so in training mode, where an image's features depend on its batch.
   */
  readonly cachesFeatures: boolean;
  /**
   * Bumped when the strategy's meaning changes: it enters the cell id, so a resumed sweep never
   * reports a result of the old meaning under the new one.
   */
  readonly revision: number;
}

export const STRATEGIES: Readonly<Record<StrategyKind, StrategyDefinition>> = {
  finetune: {
    summary: 'every layer trained',
    frozenBatchNorm: null,
    cachesFeatures: false,
    revision: 1,
  },
  freeze: {
    summary:
      "the study's freeze: backbone weights fixed, its BatchNorm in training mode (batch statistics; running statistics adapt to the target), new head trained",
    frozenBatchNorm: 'train',
    cachesFeatures: false,
    revision: 2,
  },
  freezeUntil: {
    summary: 'stages before <stage> frozen as in freeze (BatchNorm in training mode), the rest trained',
    frozenBatchNorm: 'train',
    cachesFeatures: false,
    revision: 2,
  },
  probe: {
    summary:
      "linear probe: backbone frozen with the source's BatchNorm statistics (inference mode), head trained on cached features",
    frozenBatchNorm: 'source',
    cachesFeatures: true,
    revision: 1,
  },
  adapt: {
    summary:
      "backbone frozen after one pass that adapts its BatchNorm statistics to the target's training images, head trained on cached features",
    frozenBatchNorm: 'adapted',
    cachesFeatures: true,
    revision: 1,
  },
  scratch: {
    summary:
      "the same architecture from random initialisation (torchvision's), every layer trained: what transfer is measured against",
    frozenBatchNorm: null,
    cachesFeatures: false,
    revision: 1,
  },
};

/** Strategy names a sweep or `ferry train` accepts, besides `freezeUntil:<stage>`. */
export const STRATEGY_NAMES = ['finetune', 'freeze', 'probe', 'adapt', 'scratch'] as const;

/** What to write when a strategy name is not understood. */
export const STRATEGY_HINT = `use ${STRATEGY_NAMES.join(', ')} or freezeUntil:<stage>`;

/** The strategy a name stands for, or undefined when the name means nothing. */
export function tryParseStrategy(name: string): Strategy | undefined {
  switch (name) {
    case 'finetune':
    case 'freeze':
    case 'probe':
    case 'adapt':
    case 'scratch':
      return { kind: name };
  }
  const m = /^freezeUntil[:=]([A-Za-z0-9_.]+)$/.exec(name);
  return m?.[1] ? { kind: 'freezeUntil', stage: m[1] } : undefined;
}

export function strategyName(s: Strategy): string {
  return s.kind === 'freezeUntil' ? `freezeUntil:${s.stage}` : s.kind;
}

/** Whether a strategy starts from random weights whatever weights the cell names (`scratch`). */
export function startsFromScratch(s: Strategy | string): boolean {
  return (typeof s === 'string' ? tryParseStrategy(s)?.kind : s.kind) === 'scratch';
}

/** The definition of a strategy, given as a Strategy or by a name that tryParseStrategy accepts. */
export function strategyDefinition(s: Strategy | string): StrategyDefinition | undefined {
  const parsed = typeof s === 'string' ? tryParseStrategy(s) : s;
  return parsed ? STRATEGIES[parsed.kind] : undefined;
}

/**
 * The legend of a results table: one `name: summary` line per strategy shown, so a reader never
 * compares two different experiments under one name.
 */
export function strategyLegend(names: readonly string[]): string[] {
  return names.map((n) => `${n}: ${strategyDefinition(n)?.summary ?? 'unknown strategy'}`);
}
