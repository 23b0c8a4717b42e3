import { describe, expect, test } from 'vitest';
import {
  formatP,
  summarizeResult,
  resultsTable,
  bestEpochText,
  tableCsv,
  tableMarkdown,
  wilsonInterval,
  type CellOutcome,
} from '@ferry/common';

/** 20 val images, labels 0/1 alternating; `right` lists the images a cell classified correctly. */
const LABELS = Array.from({ length: 20 }, (_, i) => i % 2);
function outcome(
  dataset: string,
  color: string,
  strategy: string,
  seed: number,
  right: readonly number[],
  hash = 'h',
): CellOutcome {
  const predicted = LABELS.map((l, i) => (right.includes(i) ? l : 1 - l));
  return {
    spec: { dataset, color, strategy, model: 'resnet18', seed },
    bestValAccuracy: right.length / LABELS.length,
    bestEpoch: 3,
    wallMs: 1000,
    imagesPerSec: 10,
    predictions: { predicted, labels: LABELS, valSetHash: hash },
  };
}
const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

describe('results table: the verdict rests on a paired test', () => {
  test('finetune right on 18 images, freeze on 10, 9 vs 1 discordant: exact McNemar p = 2 (C(10,0) + C(10,1)) / 2^10, finetune wins', () => {
    // finetune: 0..17 right; freeze: 0..8 and 18 right -> only finetune: 9..17 (9), only freeze: 18 (1).
    const t = resultsTable([
      outcome('ants', 'rgb', 'finetune', 0, range(0, 18)),
      outcome('ants', 'rgb', 'freeze', 0, [...range(0, 9), 18]),
    ]);
    const row = t.rows[0]!;
    expect(row.byStrategy['finetune']).toMatchObject({ correct: 18, total: 20, mean: 0.9 });
    expect(row.byStrategy['finetune']!.ci95).toEqual(wilsonInterval(18, 20));
    expect(row.comparison).toMatchObject({
      a: 'finetune',
      b: 'freeze',
      test: 'mcnemar-exact',
      discordant: [9, 1],
      pairedSeeds: 1,
      winner: 'finetune',
      seeds: null,
    });
    expect(row.comparison!.pValue).toBeCloseTo((2 * (1 + 10)) / 1024, 12);
    expect(row.winner).toBe('finetune');
    const md = tableMarkdown(t);
    expect(md).toContain('| ants | rgb | **90.0% [69.9, 97.2]** | 50.0% [29.9, 70.1] | finetune (McNemar p = 0.021) |');
    // The same data at alpha 0.01: no winner, the p-value still shown.
    const strict = resultsTable(
      [outcome('ants', 'rgb', 'finetune', 0, range(0, 18)), outcome('ants', 'rgb', 'freeze', 0, [...range(0, 9), 18])],
      { alpha: 0.01 },
    );
    expect(strict.rows[0]!.winner).toBeNull();
    expect(tableMarkdown(strict)).toContain('no significant difference (McNemar p = 0.021)');
  });

  test('a gap of 2 images on 20 is no significant difference, whatever the means say', () => {
    // finetune: 0..11 right (12); freeze: 0..8 and 12 (10): only finetune 9,10,11 (3), only freeze 12 (1); p = 2 (1 + 4) / 16.
    const t = resultsTable([
      outcome('ants', 'gray', 'finetune', 0, range(0, 12)),
      outcome('ants', 'gray', 'freeze', 0, [...range(0, 9), 12]),
    ]);
    const c = t.rows[0]!.comparison!;
    expect(c.discordant).toEqual([3, 1]);
    expect(c.pValue).toBeCloseTo(0.625, 12);
    expect(c.winner).toBeNull();
    expect(t.rows[0]!.winner).toBeNull();
    expect(tableMarkdown(t)).toContain('no significant difference (McNemar p = 0.62)');
  });

  test('seeds pool into one McNemar test; 3 seeds add a paired t-test over seeds', () => {
    const outcomes = [0, 1, 2].flatMap((seed) => [
      outcome('d', 'rgb', 'finetune', seed, range(0, 16 + seed)),
      outcome('d', 'rgb', 'freeze', seed, range(0, 12)),
    ]);
    const c = resultsTable(outcomes).rows[0]!.comparison!;
    // only finetune: 4 + 5 + 6 images, only freeze: none.
    expect(c.discordant).toEqual([15, 0]);
    expect(c.pValue).toBeCloseTo(2 / 2 ** 15, 12);
    expect(c.pairedSeeds).toBe(3);
    // Per-seed differences 0.2, 0.25, 0.3: mean 0.25, sd 0.05, t = 0.25 / (0.05 / sqrt 3), t^2 = 75,
    // df 2, where Student's two-sided p has a closed form, 1 - |t| / sqrt(t^2 + 2) = 1 - sqrt(75/77)
    // (0.01307, as scipy's ttest_rel).
    expect(c.seeds!.n).toBe(3);
    expect(c.seeds!.pValue).toBeCloseTo(1 - Math.sqrt(75 / 77), 12);
    expect(resultsTable(outcomes).rows[0]!.byStrategy['finetune']).toMatchObject({ n: 3, correct: 51, total: 60 });
  });

  test('without per-image predictions, 3 seeds fall back to the paired t-test; fewer say there is no test', () => {
    const strip = (o: CellOutcome): CellOutcome => ({
      spec: o.spec,
      bestValAccuracy: o.bestValAccuracy,
      bestEpoch: o.bestEpoch,
      wallMs: o.wallMs,
      imagesPerSec: o.imagesPerSec,
    });
    const three = [0, 1, 2]
      .flatMap((seed) => [
        outcome('d', 'rgb', 'finetune', seed, range(0, 16 + seed)),
        outcome('d', 'rgb', 'freeze', seed, range(0, 12)),
      ])
      .map(strip);
    const c = resultsTable(three).rows[0]!.comparison!;
    expect(c.test).toBe('paired-t');
    expect(c.pValue).toBeCloseTo(1 - Math.sqrt(75 / 77), 12);
    expect(c.winner).toBe('finetune');
    expect(resultsTable(three).rows[0]!.byStrategy['finetune']!.ci95).toBeNull();
    const one = resultsTable(three.filter((o) => o.spec.seed === 0)).rows[0]!;
    expect(one.comparison).toMatchObject({ test: 'none', winner: null, pValue: null });
    expect(tableMarkdown(resultsTable(three.filter((o) => o.spec.seed === 0)))).toContain(
      'no test: per-image predictions were not kept, and fewer than 3 seeds',
    );
  });

  test('cells evaluated on different val images are not paired', () => {
    const t = resultsTable([
      outcome('d', 'rgb', 'finetune', 0, range(0, 18), 'a'),
      outcome('d', 'rgb', 'freeze', 0, range(0, 10), 'b'),
    ]);
    expect(t.rows[0]!.comparison).toMatchObject({
      test: 'none',
      reason: 'the cells were evaluated on different val images, and fewer than 3 seeds',
    });
  });

  test('rgb against gray per dataset and strategy, on the same images; CSV and the legend carry it all', () => {
    const t = resultsTable([
      outcome('d', 'rgb', 'finetune', 0, range(0, 19)),
      outcome('d', 'gray', 'finetune', 0, range(0, 8)),
      outcome('d', 'rgb', 'freeze', 0, range(0, 12)),
      outcome('d', 'gray', 'freeze', 0, range(0, 11)),
    ]);
    expect(t.colorComparisons).toHaveLength(2);
    const ft = t.colorComparisons.find((c) => c.strategy === 'finetune')!;
    expect(ft.comparison).toMatchObject({ a: 'rgb', b: 'gray', discordant: [11, 0], winner: 'rgb' });
    expect(ft.comparison.pValue).toBeCloseTo(2 / 2 ** 11, 12);
    const fr = t.colorComparisons.find((c) => c.strategy === 'freeze')!;
    expect(fr.comparison).toMatchObject({ discordant: [1, 0], winner: null, pValue: 1 });
    const md = tableMarkdown(t);
    expect(md).toContain('rgb against gray, on the same images:');
    expect(md).toContain('| d | finetune | **95.0% [76.4, 99.1]** | 40.0% [21.9, 61.3] | rgb (McNemar p = 0.00098) |');
    expect(md).toContain("- freeze: the study's freeze: backbone weights fixed, its BatchNorm in training mode");
    expect(md).toContain(
      '95% Wilson interval on the val images pooled over seeds; a verdict names a winner only when p < 0.05',
    );
    const [head, rgbRow] = tableCsv(t).split('\n');
    expect(head).toContain('finetune_ci95_low,finetune_ci95_high');
    expect(head).toContain(
      'compared,test,p_value,winner,finetune_rgb_vs_gray_test,finetune_rgb_vs_gray_p_value,finetune_rgb_vs_gray_winner',
    );
    expect(head!.endsWith('finetune_semantics,freeze_semantics')).toBe(true);
    expect(rgbRow).toContain(',finetune vs freeze,mcnemar-exact,');
    expect(rgbRow).toContain(',mcnemar-exact,0.000976562,rgb,');
    expect(rgbRow).toContain(
      '"the study\'s freeze: backbone weights fixed, its BatchNorm in training mode (batch statistics; running statistics adapt to the target), new head trained"',
    );
  });

  test('p-values read as a reader expects', () => {
    expect(formatP(0.41)).toBe('p = 0.41');
    expect(formatP(0.0214)).toBe('p = 0.021');
    expect(formatP(0.00098)).toBe('p = 0.00098');
    expect(formatP(3e-7)).toBe('p < 0.0001');
  });

  test('a reported result is read once for every view: predictions only when complete, none without them', () => {
    const base = {
      bestValAccuracy: 0.5,
      bestEpoch: 2,
      wallMs: 10,
      imagesPerSec: 3,
      classes: ['a', 'b'],
      confusion: [{ counts: [1, 0] }, { counts: [1, 0] }],
      perClassAccuracy: [1, 0],
      valPredictions: [0, 0],
      valLabels: [0, 1],
      valSetHash: 'h',
    };
    const full = summarizeResult(base);
    expect(full.predictions).toEqual({ predicted: [0, 0], labels: [0, 1], valSetHash: 'h' });
    expect(full.confusion).toEqual([
      [1, 0],
      [1, 0],
    ]);
    const none = summarizeResult({ ...base, valPredictions: [], valLabels: [], valSetHash: '' });
    expect(none).toEqual({
      bestValAccuracy: 0.5,
      bestEpoch: 2,
      wallMs: 10,
      imagesPerSec: 3,
      classes: ['a', 'b'],
      confusion: full.confusion,
      perClassAccuracy: [1, 0],
    });
    expect(summarizeResult({ ...base, valPredictions: [0] }).predictions).toBeUndefined();
    expect(summarizeResult({ ...base, valSetHash: '' }).predictions).toBeUndefined();
  });
});

describe('results table: settings that vary are rows, never pooled as seeds', () => {
  const withSettings = (o: CellOutcome, settings: Record<string, unknown>): CellOutcome => ({ ...o, settings });
  const sweep = [0.01, 0.001].flatMap((lr) =>
    [0, 1].flatMap((seed) => [
      withSettings(outcome('ants', 'rgb', 'finetune', seed, range(0, lr === 0.01 ? 18 : 12)), {
        lr,
        epochs: 5,
        weights: 'pretrained',
      }),
      withSettings(outcome('ants', 'rgb', 'scratch', seed, range(0, 8)), { lr, epochs: 5, weights: 'none' }),
    ]),
  );

  test('a learning-rate axis splits the rows (scratch naming no weights does not); each row pools only its seeds', () => {
    const t = resultsTable(sweep);
    expect(t.groupBy).toEqual(['lr']);
    expect(t.rows.map((r) => r.group)).toEqual([{ lr: 0.001 }, { lr: 0.01 }]);
    expect(t.rows.map((r) => r.byStrategy['finetune']!.n)).toEqual([2, 2]);
    expect(t.rows.map((r) => r.byStrategy['finetune']!.mean)).toEqual([0.6, 0.9]);
    expect(t.colorComparisons).toEqual([]);
    const md = tableMarkdown(t);
    expect(md).toContain('| dataset | color | lr | finetune | scratch | verdict |');
    expect(md).toMatch(/\| ants \| rgb \| 0\.001 \| (\*\*)?60\.0%/);
    expect(tableCsv(t).split('\n')[0]).toMatch(/^dataset,color,model,lr,finetune_mean/);
  });

  test('the best epoch reads from 1: one seed as a whole number, a mean over seeds to a tenth (never "8.0" for one seed)', () => {
    const cell = { mean: 0.5, std: 0, wallMsMean: 1, imagesPerSecMean: 1, correct: null, total: null, ci95: null };
    expect(bestEpochText({ ...cell, n: 1, bestEpochMean: 7 })).toBe('8');
    expect(bestEpochText({ ...cell, n: 3, bestEpochMean: (1 + 2 + 4) / 3 })).toBe('3.3');
    expect(bestEpochText({ ...cell, n: 2, bestEpochMean: 7 })).toBe('8.0');
  });

  test('by: any other setting splits too (seed: one row per seed); a row axis is refused', () => {
    const t = resultsTable(sweep, { by: ['seed'] });
    expect(t.groupBy).toEqual(['seed', 'lr']);
    expect(t.rows).toHaveLength(4);
    expect(t.rows.every((r) => r.byStrategy['finetune']!.n === 1)).toBe(true);
    expect(() => resultsTable(sweep, { by: ['strategy'] })).toThrow(/row or column/);
  });

  test("a stage's source cell is named as a reader knows it (dataset, color, strategy); the legend says what weights are", () => {
    const src = 'ab'.repeat(32);
    const staged = [
      { ...withSettings(outcome('source', 'rgb', 'finetune', 0, range(0, 19)), { weights: 'none' }), cellId: src },
      withSettings(outcome('ants', 'rgb', 'freeze', 0, range(0, 15)), { weights: `cell:${src}` }),
      withSettings(outcome('ants', 'rgb', 'freeze', 0, range(0, 11)), { weights: 'none' }),
      withSettings(outcome('ants', 'gray', 'freeze', 0, range(0, 11)), { weights: `cell:${'cd'.repeat(32)}` }),
    ];
    const t = resultsTable(staged);
    expect(t.groupBy).toEqual(['weights']);
    expect(t.rows.map((r) => [r.dataset, r.color, r.group['weights']])).toEqual([
      ['ants', 'gray', 'cell cdcdcdcd'],
      ['ants', 'rgb', 'none'],
      ['ants', 'rgb', 'source rgb finetune'],
      ['source', 'rgb', 'none'],
    ]);
    expect(tableMarkdown(t)).toContain('- weights: what the cells start from');
  });

  test("seeds whose sources are their own seeds' pool into one row; sources differing in a setting are told apart", () => {
    const id = (seed: number, lr: number): string => `${seed}${lr === 0.1 ? 'a' : 'b'}`.repeat(32);
    const sources = [0, 1, 2].flatMap((seed) =>
      [0.1, 0.01].map((lr) => ({
        ...withSettings(outcome('source', 'rgb', 'finetune', seed, range(0, 19)), { weights: 'none', lr }),
        cellId: id(seed, lr),
      })),
    );
    const targets = [0, 1, 2].map((seed) =>
      withSettings(outcome('ants', 'rgb', 'freeze', seed, range(0, 14 + seed)), { weights: `cell:${id(seed, 0.1)}` }),
    );
    const one = resultsTable([...sources.filter((o) => o.settings?.['lr'] === 0.1), ...targets]);
    // Three seeds, three sources (one per seed, same settings): one row, the seeds pooled.
    const ants = one.rows.filter((r) => r.dataset === 'ants');
    expect(ants.map((r) => [r.group, r.byStrategy['freeze']!.n])).toEqual([[{}, 3]]);
    // Sources at two learning rates: the label carries a hash of the source's settings.
    const other = [0, 1, 2].map((seed) =>
      withSettings(outcome('ants', 'rgb', 'freeze', seed, range(0, 10)), { weights: `cell:${id(seed, 0.01)}` }),
    );
    const two = resultsTable([...sources, ...targets, ...other]).rows.filter((r) => r.dataset === 'ants');
    expect(two).toHaveLength(2);
    expect(two.every((r) => r.byStrategy['freeze']!.n === 3)).toBe(true);
    const labels = two.map((r) => String(r.group['weights']));
    expect(labels.every((l) => /^source rgb finetune \([0-9a-f]{8}\)$/.test(l))).toBe(true);
    expect(new Set(labels).size).toBe(2);
  });
});
