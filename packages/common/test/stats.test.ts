import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { mcnemarExact, pairedTTest, studentTwoSided, wilsonInterval } from '@ferry/common';

const SCRIPT = fileURLToPath(new URL('../../../test/fixtures/stats_reference.py', import.meta.url));

const request = {
  mcnemar: [
    [0, 0],
    [3, 0],
    [0, 7],
    [5, 5],
    [12, 3],
    [40, 25],
    [31, 62],
    [1200, 1100],
    [2500, 2300],
  ],
  wilson: [
    [0, 10],
    [10, 10],
    [87, 100],
    [29, 49],
    [1, 3],
    [5123, 6000],
  ],
  paired: [
    [
      [0.92, 0.92, 0.93, 0.89],
      [0.95, 0.93, 0.94, 0.93],
    ],
    [
      [0.45, 0.45, 0.39, 0.43],
      [0.45, 0.45, 0.46, 0.47],
    ],
    [
      [0.81, 0.83, 0.8],
      [0.7, 0.74, 0.76],
    ],
  ],
  t: [
    [2.776445105, 4],
    [0.5, 1],
    [12.7, 2],
    [-3.2, 30],
    [40, 3],
  ],
};

/** scipy's answers to the same questions (Debian's python3-scipy): an independent implementation. */
const scipy = JSON.parse(
  execFileSync('/usr/bin/python3', [SCRIPT], { input: JSON.stringify(request), encoding: 'utf8' }),
) as {
  mcnemar: number[];
  wilson: [number, number][];
  paired: number[];
  t: number[];
};

describe('statistics against scipy', () => {
  test('exact McNemar p-values, from 0 discordant images to thousands', () => {
    request.mcnemar.forEach(([b, c], i) => {
      const want = scipy.mcnemar[i]!;
      // log-space binomial sums: relative error near 1e-12, far below what a p-value needs.
      expect(Math.abs(mcnemarExact(b!, c!) - want), `b=${b} c=${c}`).toBeLessThanOrEqual(
        1e-9 * Math.max(want, 1e-300) + 1e-15,
      );
    });
  });

  test('exact McNemar by hand: b=3, c=0 is 2 * (1/2)^3 = 0.25; b=12, c=3 is 2 * sum C(15, i), i <= 3, / 2^15', () => {
    expect(mcnemarExact(3, 0)).toBeCloseTo(0.25, 14);
    const tail = [1, 15, 105, 455].reduce((a, b) => a + b, 0) / 2 ** 15;
    expect(mcnemarExact(12, 3)).toBeCloseTo(2 * tail, 14);
    expect(mcnemarExact(5, 5)).toBe(1);
  });

  test('95% Wilson intervals', () => {
    request.wilson.forEach(([k, n], i) => {
      const [lo, hi] = wilsonInterval(k!, n!);
      expect(lo, `k=${k} n=${n}`).toBeCloseTo(scipy.wilson[i]![0], 12);
      expect(hi, `k=${k} n=${n}`).toBeCloseTo(scipy.wilson[i]![1], 12);
    });
  });

  test('paired t-test over seeds and the t distribution', () => {
    request.paired.forEach(([a, b], i) => {
      const diffs = a!.map((x, j) => x - b![j]!);
      expect(pairedTTest(diffs).pValue).toBeCloseTo(scipy.paired[i]!, 12);
    });
    request.t.forEach(([t, df], i) => expect(studentTwoSided(t!, df!)).toBeCloseTo(scipy.t[i]!, 12));
    expect(pairedTTest([0.01, 0.01, 0.01]).pValue).toBe(0);
    expect(pairedTTest([0, 0, 0]).pValue).toBe(1);
  });
});
