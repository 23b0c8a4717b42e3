import { describe, expect, test } from 'vitest';
import {
  adviceAgrees,
  adviceText,
  resultsTable,
  rowAdviceOfWire,
  tableCsv,
  tableMarkdown,
  wireAdvice,
  type Advice,
  type AdviceWinner,
  type CellOutcome,
  type RowAdvice,
} from '@ferry/common';

/** 20 val images, labels 0/1 alternating; `right` lists the images a cell classified correctly. */
const LABELS = Array.from({ length: 20 }, (_, i) => i % 2);
const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);
const SOURCE = 'abcdef0123456789';

function outcome(
  dataset: string,
  color: string,
  strategy: string,
  weights: string,
  right: readonly number[],
  cellId?: string,
): CellOutcome {
  const predicted = LABELS.map((l, i) => (right.includes(i) ? l : 1 - l));
  return {
    spec: { dataset, color, strategy, model: 'resnet_tiny', seed: 0 },
    settings: { weights },
    ...(cellId ? { cellId } : {}),
    bestValAccuracy: right.length / LABELS.length,
    bestEpoch: 3,
    wallMs: 1000,
    imagesPerSec: 10,
    predictions: { predicted, labels: LABELS, valSetHash: 'h' },
  };
}

function advice(winner: AdviceWinner, margin: number, low: number, high: number): Advice {
  return { heuristic: true, winner, marginPoints: margin, rangePoints: [low, high], reasons: [], note: 'a heuristic' };
}

const row = (dataset: string, color: string, weights: string, a: Advice): RowAdvice => ({
  dataset,
  color,
  model: 'resnet_tiny',
  weights,
  advice: a,
});

// finetune 18 right, freeze 10 (9 vs 1 discordant): finetune wins (McNemar p = 0.021).
const WINS = [range(0, 18), [...range(0, 9), 18]] as const;
// finetune 11, freeze 10: no significant difference.
const EVEN = [range(0, 11), range(0, 10)] as const;

const OUTCOMES: CellOutcome[] = [
  outcome('source', 'rgb', 'finetune', 'none', range(0, 20), SOURCE),
  outcome('ants', 'rgb', 'finetune', 'pretrained', WINS[0]),
  outcome('ants', 'rgb', 'freeze', 'pretrained', WINS[1]),
  outcome('ants', 'gray', 'finetune', 'pretrained', EVEN[0]),
  outcome('ants', 'gray', 'freeze', 'pretrained', EVEN[1]),
  outcome('bees', 'rgb', 'finetune', 'pretrained', WINS[0]),
  outcome('bees', 'rgb', 'freeze', 'pretrained', WINS[1]),
  outcome('target', 'rgb', 'finetune', `cell:${SOURCE}`, WINS[0]),
  outcome('target', 'rgb', 'freeze', `cell:${SOURCE}`, WINS[1]),
];

const ADVICE: RowAdvice[] = [
  row('ants', 'rgb', 'pretrained', advice('finetune', 5, 2, 8)), // agrees: finetune won
  row('ants', 'gray', 'pretrained', advice('about equal', 0, -3, 3)), // agrees: no significant difference
  row('bees', 'rgb', 'pretrained', advice('freeze', -4, -7, -1)), // disagrees: finetune won
  // Matched on the raw weights, not on the table's relabelled 'source rgb finetune (abcdef01)'.
  row('target', 'rgb', 'source rgb finetune (abcdef01)', advice('freeze', -9, -14, -5)),
  row('target', 'rgb', `cell:${SOURCE}`, advice('finetune', 10, 5, 15)), // agrees
  row('target', 'rgb', 'none', advice('freeze', -9, -14, -5)), // another row's weights: not this row's
];

describe("results table: the advisor's prediction beside the verdict", () => {
  test('each finetune/freeze row gets the advice of its dataset, color, model and raw weights; agreement counted', () => {
    const t = resultsTable(OUTCOMES, { advice: ADVICE });
    const by = (d: string, c: string) => t.rows.find((r) => r.dataset === d && r.color === c)!;
    expect(by('ants', 'rgb').advice).toMatchObject({ text: 'finetune +5 (2 to 8)', agrees: true });
    expect(by('ants', 'gray').advice).toMatchObject({ text: 'about equal (-3 to 3)', agrees: true });
    expect(by('bees', 'rgb').advice).toMatchObject({ text: 'freeze -4 (-7 to -1)', agrees: false });
    expect(by('target', 'rgb').advice).toMatchObject({ text: 'finetune +10 (5 to 15)', agrees: true });
    expect(by('source', 'rgb').advice).toBeUndefined(); // no freeze column: nothing predicted
    expect(t.advisor).toMatchObject({ rows: 4, compared: 4, agreed: 3 });

    const md = tableMarkdown(t);
    expect(md).toContain('| verdict | advisor (heuristic) |');
    expect(md).toContain('| finetune (McNemar p = 0.021) | freeze -4 (-7 to -1) |');
    expect(md).toMatch(/\| no significant difference \(McNemar p = [0-9.]+\) \| about equal \(-3 to 3\) \|/);
    expect(md).toMatch(/\| source \| rgb \| .* \| - \|$/m);
    const legend = md.split('\n').filter((l) => l.startsWith('- advisor (heuristic)'));
    expect(legend).toHaveLength(1);
    expect(legend[0]).toContain('heuristic');
    expect(legend[0]).toContain('the advisor agreed with the verdict on 3 of 4 rows');

    // The advisor's columns come last (the semantics before them are quoted and hold commas).
    const [head, ...lines] = tableCsv(t).split('\n');
    expect(head!.split(',').slice(-6)).toEqual([
      'advisor_winner',
      'advisor_margin',
      'advisor_range_low',
      'advisor_range_high',
      'advisor_agrees',
      'advisor_heuristic',
    ]);
    const bees = lines
      .find((l) => l.startsWith('bees,'))!
      .split(',')
      .slice(-6);
    expect(bees).toEqual(['freeze', '-4', '-7', '-1', 'false', 'true']);
    expect(
      lines
        .find((l) => l.startsWith('source,'))!
        .split(',')
        .slice(-6),
    ).toEqual(['', '', '', '', '', '']);
    // JSON (results.json) carries the advice as it is.
    expect(
      JSON.parse(JSON.stringify(t)).rows.find((r: { dataset: string }) => r.dataset === 'bees').advice.advice,
    ).toEqual(ADVICE[2]!.advice);
  });

  test('without advice the table has no advisor column, legend or CSV columns', () => {
    const t = resultsTable(OUTCOMES);
    expect(t.advisor).toBeNull();
    expect(tableMarkdown(t)).not.toContain('advisor');
    expect(tableCsv(t)).not.toContain('advisor');
  });

  test('agreement: same winner, or about equal against no significant difference; no test is not counted', () => {
    expect(adviceAgrees('finetune', { tested: true, winner: 'finetune' })).toBe(true);
    expect(adviceAgrees('about equal', { tested: true, winner: null })).toBe(true);
    expect(adviceAgrees('freeze', { tested: true, winner: null })).toBe(false);
    expect(adviceAgrees('about equal', { tested: true, winner: 'freeze' })).toBe(false);
    expect(adviceAgrees('finetune', { tested: false, winner: null })).toBeNull();
    expect(adviceText(advice('freeze', -4, -7, -1))).toBe('freeze -4 (-7 to -1)');
  });

  test('the wire form round-trips', () => {
    const a: Advice = {
      ...advice('finetune', 5, 2, 8),
      reasons: [{ input: 'domain', value: '0.177', points: 5, why: 'moderate' }],
    };
    const back = rowAdviceOfWire({ ...row('d', 'rgb', 'none', a), measured: 'x', advice: wireAdvice(a) });
    expect(back).toEqual({ ...row('d', 'rgb', 'none', a), measured: 'x' });
    expect(rowAdviceOfWire({ ...row('d', 'rgb', 'none', a), measured: '', advice: undefined })).toBeUndefined();
  });
});
