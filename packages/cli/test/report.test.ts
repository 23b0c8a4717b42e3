import { describe, expect, test } from 'vitest';
import { CellResult } from '@ferry/protocol';
import { legendLabels, reportCell, type ReportCell } from '../src/report.js';

const cell = (strategy: string, seed: number, settings: Record<string, unknown>): ReportCell => ({
  dataset: 'demo',
  color: 'rgb',
  strategy,
  model: 'resnet18',
  seed,
  bestEpoch: 0,
  bestValAccuracy: 0.5,
  epochs: [],
  classes: [],
  confusion: [],
  settings,
});

describe("results.html's legends", () => {
  test('two cells of one strategy and seed are told apart by what differs (the pretrained and the random-weights freeze)', () => {
    const pretrained = cell('freeze', 0, { weights: 'pretrained', lr: 0.001 });
    const random = cell('freeze', 0, { weights: 'none', lr: 0.001 });
    const finetune = cell('finetune', 0, { weights: 'pretrained', lr: 0.001 });
    const other = cell('freeze', 1, { weights: 'none', lr: 0.01 });
    const labels = legendLabels([pretrained, random, finetune, other]);
    expect([pretrained, random, finetune, other].map((c) => labels.get(c))).toEqual([
      'freeze seed 0 weights pretrained',
      'freeze seed 0 weights none',
      'finetune seed 0',
      'freeze seed 1',
    ]);
  });

  test("a finished cell's settings come from its spec (all but what the legend already says)", () => {
    const spec = { dataset: 'demo', color: 'gray', strategy: 'freeze', model: 'resnet18', seed: 3, weights: 'none' };
    const r = reportCell(
      spec,
      CellResult.fromPartial({ bestEpoch: 1, bestValAccuracy: 0.7, classes: ['a'], confusion: [{ counts: [1] }] }),
    );
    expect(r).toMatchObject({ strategy: 'freeze', seed: 3, settings: { weights: 'none' }, confusion: [[1]] });
  });
});
