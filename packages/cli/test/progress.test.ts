import { Writable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { CellSpec, type SweepStatus } from '@ferry/protocol';
import { RunProgress, formatDuration } from '../src/progress.js';

const cell = (
  id: string,
  state: string,
  epoch: number,
  extra: Partial<SweepStatus['cells'][number]> = {},
): SweepStatus['cells'][number] => ({
  cellId: id,
  spec: CellSpec.fromPartial({
    dataset: 'demo',
    color: id === 'a' ? 'rgb' : 'gray',
    strategy: 'finetune',
    model: 'resnet18',
    seed: 0,
    epochs: 10,
  }),
  state,
  attempts: 1,
  worker: 'local-0',
  epoch,
  bestValAccuracy: 0,
  error: '',
  checkpointEpochs: 0,
  lastValAccuracy: 0,
  ...extra,
});
const sweep = (cells: SweepStatus['cells']): SweepStatus => ({
  sweepId: 's',
  name: 's',
  pending: cells.filter((c) => c.state === 'pending').length,
  running: cells.filter((c) => c.state === 'running').length,
  done: cells.filter((c) => c.state === 'done').length,
  failed: cells.filter((c) => c.state === 'failed').length,
  cancelled: 0,
  cells,
  createdAt: '',
  totalCells: cells.length,
  nextOffset: 0,
});

class Sink extends Writable {
  text = '';
  override _write(chunk: Buffer, _e: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

describe('ferry run progress', () => {
  test('durations read as a person would say them', () => {
    expect([0, 42_400, 61_000, 3_600_000 + 120_000].map(formatDuration)).toEqual([
      '0 s',
      '42 s',
      '1 min 01 s',
      '1 h 02 min',
    ]);
  });

  test('a line per running cell with its epoch, last val accuracy and ETA from its pace; an overall ETA; a failure when it happens', () => {
    let now = 0;
    const stderr = new Sink();
    const p = new RunProgress({ env: {}, stdout: new Sink(), stderr }, () => now);
    p.lines(sweep([cell('a', 'running', 2), cell('b', 'pending', 0)]));
    now = 10_000; // 2 epochs in 10 s: 5 s per epoch
    const l = p.lines(sweep([cell('a', 'running', 4, { lastValAccuracy: 0.625 }), cell('b', 'pending', 0)]));
    expect(l.cells).toEqual(['  demo rgb finetune resnet18 seed 0: epoch 4/10, val 62.5%, ETA 30 s (local-0)']);
    // 16 epochs left at 0.2 epochs/s
    expect(l.overall).toBe(' 20% 0/2 done, 1 running, 0 failed; epochs 4/20; ETA 1 min 20 s');
    const f = p.lines(
      sweep([cell('a', 'running', 4), cell('b', 'failed', 0, { error: 'FERRY_ERR_DATASET: no val/' })]),
    );
    expect(f.news).toEqual(['failed: demo gray finetune resnet18 seed 0: FERRY_ERR_DATASET: no val/']);
    expect(
      p.lines(sweep([cell('a', 'running', 4), cell('b', 'failed', 0, { error: 'FERRY_ERR_DATASET: no val/' })])).news,
    ).toEqual([]);
  });

  test('without a terminal: the overall line at each tenth, a cell line at each finished epoch', () => {
    let now = 0;
    const stderr = new Sink();
    const p = new RunProgress({ env: {}, stdout: new Sink(), stderr }, () => now);
    for (let e = 0; e <= 10; e++) {
      now = e * 1000;
      p.update(sweep([cell('a', e === 10 ? 'done' : 'running', e)]));
    }
    const lines = stderr.text.trim().split('\n');
    expect(lines.filter((x) => /^\s*\d+% /.test(x))).toHaveLength(11);
    expect(lines.filter((x) => x.includes('demo rgb finetune resnet18 seed 0: epoch'))).toHaveLength(9);
    expect(stderr.text).not.toContain('\x1b[');
  });
});
