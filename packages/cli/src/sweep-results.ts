import { parseCellSpec, rowAdviceOfWire, summarizeResult, type CellOutcome, type RowAdvice } from '@ferry/common';
import type { SweepStatus } from '@ferry/protocol';
import { reportCell, type ReportCell } from './report.js';

/** The done cells of a sweep (with results) as the HTML report draws them. */
export function reportCells(s: SweepStatus): ReportCell[] {
  return s.cells.filter((c) => c.state === 'done').flatMap((c) => reportCell(c.spec!, c.result) ?? []);
}

/** The done cells of a sweep as the results table compares them. */
export function outcomes(s: SweepStatus): CellOutcome[] {
  return s.cells
    .filter((c) => c.state === 'done' && c.result)
    .map((c) => {
      const r = summarizeResult(c.result!);
      // What may tell cells apart in the table (groupBy); the dataset's val split is not one.
      const settings: Record<string, unknown> = { ...c.spec! };
      delete settings['valFraction'];
      return {
        spec: parseCellSpec(c.spec, `cell ${c.cellId}`),
        settings,
        cellId: c.cellId,
        bestValAccuracy: r.bestValAccuracy,
        bestEpoch: r.bestEpoch,
        wallMs: r.wallMs,
        imagesPerSec: r.imagesPerSec,
        ...(r.predictions ? { predictions: r.predictions } : {}),
      };
    });
}

/** The advisor's rows the coordinator holds for the sweep (PutAdvice), as the results table matches them. */
export function sweepAdvice(s: SweepStatus): RowAdvice[] {
  return s.advice.flatMap((a) => rowAdviceOfWire(a) ?? []);
}
