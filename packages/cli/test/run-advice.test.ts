import { describe, expect, test } from 'vitest';
import { CellSpec, type SweepStatus } from '@ferry/protocol';
import type { AdminClient } from '@ferry/protocol';
import { RunAdvisor, advisedRows } from '../src/actions/run-advice.js';

const SRC = 'abcdef0123456789';
const cell = (id: string, dataset: string, strategy: string, weights: string, state: string, color = 'rgb') => ({
  cellId: id,
  spec: CellSpec.fromPartial({ dataset, color, strategy, model: 'resnet_tiny', weights, seed: 0, epochs: 2 }),
  state,
  attempts: 0,
  worker: '',
  epoch: 0,
  bestValAccuracy: 0,
  error: '',
  checkpointEpochs: 0,
  lastValAccuracy: 0,
});
const sweep = (cells: SweepStatus['cells'], advice: SweepStatus['advice'] = []): SweepStatus => ({
  sweepId: 's',
  name: 's',
  pending: 0,
  running: 0,
  done: 0,
  failed: 0,
  cancelled: 0,
  blocked: 0,
  waiting: 0,
  cells,
  createdAt: '',
  totalCells: cells.length,
  nextOffset: 0,
  advice,
});

describe("ferry run's advisor: which rows, and when", () => {
  test('rows with finetune and freeze are advised when their weights are there: at once, or once the source cell is done', async () => {
    const cells = (srcState: string, targetGray = 'pending') => [
      cell(SRC, 'source', 'finetune', 'none', srcState),
      cell('t1', 'target', 'finetune', `cell:${SRC}`, 'pending'),
      cell('t2', 'target', 'freeze', `cell:${SRC}`, 'pending'),
      cell('p1', 'ants', 'finetune', 'pretrained', 'running'),
      cell('p2', 'ants', 'freeze', 'pretrained', 'pending'),
      cell('p3', 'ants', 'scratch', 'pretrained', 'pending'),
      cell('g1', 'ants', 'finetune', 'pretrained', targetGray, 'gray'),
      cell('g2', 'ants', 'freeze', 'pretrained', targetGray, 'gray'),
      cell('o1', 'bees', 'finetune', 'none', 'pending'), // no freeze: no advice
    ];
    expect(advisedRows(sweep(cells('pending'))).map((r) => [r.spec.dataset, r.spec.color, r.source])).toEqual([
      ['target', 'rgb', SRC],
      ['ants', 'rgb', null],
      ['ants', 'gray', null],
    ]);
    const done: string[] = [];
    const advisor = new RunAdvisor(
      {
        dataRoot: '/data',
        cacheDir: '/cache',
        backend: 'wasm',
        io: { env: {} } as never,
        say: () => undefined,
        compute: async (row, from) => void done.push(`${row.spec.dataset} ${row.spec.color} from ${from}`),
      },
      {} as AdminClient,
      { address: 'x' },
      's',
    );
    // ants gray was advised by an earlier run (its advice is stored): not again.
    const stored = [
      { dataset: 'ants', color: 'gray', model: 'resnet_tiny', weights: 'pretrained', measured: '', time: '' },
    ];
    advisor.update(sweep(cells('running'), stored));
    await advisor.settle();
    expect(done).toEqual(['ants rgb from pretrained']);
    advisor.update(sweep(cells('running'), stored)); // nothing new: nothing twice
    advisor.update(sweep(cells('done'), stored));
    await advisor.settle();
    expect(done).toEqual(['ants rgb from pretrained', 'target rgb from source rgb finetune (abcdef01)']);
  });

  test('a source that failed: its row is never trained, never advised; a failing advice is a warning line', async () => {
    const said: string[] = [];
    const advisor = new RunAdvisor(
      {
        dataRoot: '/nowhere',
        cacheDir: '/nowhere',
        backend: 'wasm',
        io: { env: {} } as never,
        say: (l) => said.push(l),
      },
      {} as AdminClient,
      { address: 'x' },
      's',
    );
    advisor.update(
      sweep([
        cell(SRC, 'source', 'finetune', 'none', 'failed'),
        cell('t1', 'target', 'finetune', `cell:${SRC}`, 'blocked'),
        cell('t2', 'target', 'freeze', `cell:${SRC}`, 'blocked'),
        cell('p1', 'ants', 'finetune', 'pretrained', 'pending'),
        cell('p2', 'ants', 'freeze', 'pretrained', 'pending'),
      ]),
    );
    await advisor.settle();
    // resnet_tiny has no pretrained weights: said, not thrown.
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/^advisor: warning: no advice for ants rgb from pretrained: /);
  });
});
