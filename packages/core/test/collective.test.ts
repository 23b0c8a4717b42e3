import { describe, expect, test } from 'vitest';
import {
  CollectiveError,
  Rng,
  broadcastFromRank0,
  distributedShard,
  memoryRing,
  ringAllReduceMean,
  ringAllReduceSum,
  segments,
} from '@ferry/core';

const rand = (n: number, seed: number): Float32Array => {
  const r = Rng.fromSeed(seed);
  return Float32Array.from({ length: n }, () => r.normal());
};

describe('ring all-reduce (pure, in-memory transport)', () => {
  test('segments cover the buffer exactly', () => {
    expect(segments(10, 3)).toEqual([
      [0, 4],
      [4, 7],
      [7, 10],
    ]);
    expect(segments(2, 4)).toEqual([
      [0, 1],
      [1, 2],
      [2, 2],
      [2, 2],
    ]);
  });

  test.each([1, 2, 3, 4, 5])(
    '%i ranks: every rank ends with the element-wise mean, every element within float32 bound of the float64 one, bitwise identical',
    async (k) => {
      const u = 2 ** -24; // float32's unit roundoff
      for (const n of [1, 7, 1000, 600_001]) {
        const ring = memoryRing(k);
        const inputs = Array.from({ length: k }, (_, r) => rand(n, r * 31 + n));
        const want = new Float64Array(n);
        const abs = new Float64Array(n);
        for (const x of inputs)
          x.forEach((v, i) => {
            want[i]! += v;
            abs[i]! += Math.abs(v);
          });
        const outs = await Promise.all(ring.map((t, r) => ringAllReduceMean(t, inputs[r]!.slice(), `op-${n}`, 5_000)));
        // Bound, per element: k float32 terms summed in any order round at each of the k - 1
        // additions by at most u times a partial sum, itself at most sum |x| (Higham's gamma_(k-1));
        // the float32 division by k rounds once more, by u of the result.
        let worst = { ratio: 0, at: -1 };
        for (let i = 0; i < n; i++) {
          const mean = want[i]! / k;
          const bound = ((k - 1) * u * abs[i]!) / k + u * (Math.abs(mean) + ((k - 1) * u * abs[i]!) / k) + 1e-300;
          const ratio = Math.abs(outs[0]![i]! - mean) / bound;
          if (ratio > worst.ratio) worst = { ratio, at: i };
        }
        expect(worst.ratio, `n ${n}: |got - float64 mean| / bound, worst at element ${worst.at}`).toBeLessThanOrEqual(
          1,
        );
        for (const o of outs.slice(1)) expect(Buffer.from(o.buffer).equals(Buffer.from(outs[0]!.buffer))).toBe(true);
      }
    },
  );

  test('hand-checked: 3 ranks of [1,2,3,4] [10,20,30,40] [100,200,300,400]', async () => {
    const ring = memoryRing(3);
    const outs = await Promise.all(
      ring.map((t, r) => ringAllReduceSum(t, Float32Array.from([1, 2, 3, 4].map((v) => v * 10 ** r)), 'x', 1_000)),
    );
    for (const o of outs) expect([...o]).toEqual([111, 222, 333, 444]);
  });

  test("broadcast gives every rank rank 0's buffer exactly", async () => {
    const ring = memoryRing(3);
    const src = rand(5000, 9);
    const outs = await Promise.all(
      ring.map((t, r) => broadcastFromRank0(t, r === 0 ? src.slice() : rand(5000, r), 'b', 1_000)),
    );
    for (const o of outs) expect(Buffer.from(o.buffer).equals(Buffer.from(src.buffer))).toBe(true);
  });

  test('a rank that never answers aborts the collective within its deadline', async () => {
    const ring = memoryRing(3);
    const t0 = Date.now();
    const results = await Promise.allSettled([
      ringAllReduceSum(ring[0]!, rand(10, 1), 'dead', 300),
      ringAllReduceSum(ring[1]!, rand(10, 2), 'dead', 300),
    ]);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(results.every((r) => r.status === 'rejected' && r.reason instanceof CollectiveError)).toBe(true);
  });

  test('DistributedSampler shards: disjoint, equal sizes, padding by wrapping', () => {
    const order = [5, 3, 9, 1, 0, 7, 2];
    expect(distributedShard(order, 0, 2)).toEqual([5, 9, 0, 2]);
    expect(distributedShard(order, 1, 2)).toEqual([3, 1, 7, 5]);
    expect(distributedShard(order, 1, 2, false)).toEqual([3, 1, 7]);
    const all = [0, 1, 2].flatMap((r) => distributedShard([...Array(9).keys()], r, 3));
    expect(all.sort((a, b) => a - b)).toEqual([...Array(9).keys()]);
  });
});
