/**
 * The advisor's prediction beside the measured verdict: advice is stored per results-table row
 * (dataset, color, model and the cells' raw `weights`), shown in an `advisor (heuristic)` column,
 * and counted against the verdict.
 */
import type { Advice, AdviceReason, AdviceWinner } from './advice.js';

/** The advice for one row of a sweep's results table, keyed as the row is (weights as the spec holds them). */
export interface RowAdvice {
  readonly dataset: string;
  readonly color: string;
  readonly model: string;
  /** The cells' `weights` before the table relabels it: `pretrained`, `none`, a file, `cell:<id>`. */
  readonly weights: string;
  readonly advice: Advice;
  /** What was measured, in words (optional). */
  readonly measured?: string;
}

/** What identifies an advice row (and the table row it is shown on): dataset, color, model, raw weights. */
export function adviceRowKey(r: {
  readonly dataset: string;
  readonly color: string;
  readonly model: string;
  readonly weights: string;
}): string {
  return JSON.stringify([r.dataset, r.color, r.model, r.weights]);
}

/** The columns the advisor predicts between. */
export const ADVISED_STRATEGIES = ['finetune', 'freeze'] as const;

/**
 * The advice for a row: same dataset, color and model, and the row's raw weights (`weights`: the
 * one value its cells share, or undefined when the cells carry no weights setting, then the only
 * advice of that dataset, color and model).
 */
export function matchAdvice(
  advice: readonly RowAdvice[],
  row: { readonly dataset: string; readonly color: string; readonly model: string },
  weights: string | undefined,
): RowAdvice | undefined {
  const same = advice.filter((a) => a.dataset === row.dataset && a.color === row.color && a.model === row.model);
  if (weights === undefined) return same.length === 1 ? same[0] : undefined;
  return same.find((a) => a.weights === weights);
}

/** "finetune +5 (2 to 8)", "about equal (-3 to 3)", "freeze -4 (-7 to -1)". */
export function adviceText(a: Advice): string {
  const [low, high] = a.rangePoints;
  if (a.winner === 'about equal') return `about equal (${low} to ${high})`;
  const m = a.marginPoints;
  return `${a.winner} ${m > 0 ? `+${m}` : `${m}`} (${low} to ${high})`;
}

/**
 * Whether the advice agreed with a measured finetune-against-freeze verdict: the same winner, or
 * 'about equal' against no significant difference. Null when there is no verdict (no test).
 */
export function adviceAgrees(
  predicted: AdviceWinner,
  measured: { tested: boolean; winner: string | null },
): boolean | null {
  if (!measured.tested) return null;
  if (measured.winner === null) return predicted === 'about equal';
  return predicted === measured.winner;
}

/** The legend line of the advisor's column, with how often it agreed over the rows with a verdict. */
export function advisorLegend(agreed: number, compared: number): string {
  const count =
    compared === 0
      ? 'no row has a verdict to check it against yet'
      : `the advisor agreed with the verdict on ${agreed} of ${compared} row${compared === 1 ? '' : 's'}`;
  return `advisor (heuristic): the advisor's prediction of finetune minus freeze in accuracy points (range), made before training from the data and the frozen backbone (ferry advise, docs/advisor.md); a rule of thumb, not a measurement; ${count}.`;
}

/** The fields of `ferry.v1.AdviceRow` (the generated type satisfies it). */
export interface WireAdviceRow {
  readonly dataset: string;
  readonly color: string;
  readonly model: string;
  readonly weights: string;
  readonly measured: string;
  readonly advice?:
    | {
        readonly winner: string;
        readonly marginPoints: number;
        readonly rangeLow: number;
        readonly rangeHigh: number;
        readonly reasons: readonly AdviceReason[];
        readonly note: string;
      }
    | undefined;
}

const WINNERS: readonly string[] = ['finetune', 'freeze', 'about equal'];

/** A stored advice row as the table reads it; undefined when it carries no (valid) advice. */
export function rowAdviceOfWire(w: WireAdviceRow): RowAdvice | undefined {
  const a = w.advice;
  if (!a || !WINNERS.includes(a.winner)) return undefined;
  return {
    dataset: w.dataset,
    color: w.color,
    model: w.model,
    weights: w.weights,
    ...(w.measured ? { measured: w.measured } : {}),
    advice: {
      heuristic: true,
      winner: a.winner as AdviceWinner,
      marginPoints: a.marginPoints,
      rangePoints: [a.rangeLow, a.rangeHigh],
      reasons: a.reasons.map((r) => ({ input: r.input, value: r.value, points: r.points, why: r.why })),
      note: a.note,
    },
  };
}

/** Advice as the wire message `ferry.v1.Advice` holds it. */
export function wireAdvice(a: Advice): NonNullable<WireAdviceRow['advice']> {
  return {
    winner: a.winner,
    marginPoints: a.marginPoints,
    rangeLow: a.rangePoints[0],
    rangeHigh: a.rangePoints[1],
    reasons: a.reasons,
    note: a.note,
  };
}
