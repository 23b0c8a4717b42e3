import { Writable } from 'node:stream';
import { describe, expect, test } from 'vitest';
import { CellSpec, type SweepStatus } from '@ferry/protocol';
import { checkStall } from '../src/actions/run.js';
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
  blocked: cells.filter((c) => c.state === 'blocked').length,
  waiting: cells.filter((c) => c.state === 'pending' && c.spec!.weights.startsWith('cell:')).length,
  cells,
  createdAt: '',
  totalCells: cells.length,
  nextOffset: 0,
  advice: [],
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
    now = 3_000; // first seen mid-epoch: no pace from it
    expect(p.lines(sweep([cell('a', 'running', 3), cell('b', 'pending', 0)])).cells[0]).toMatch(/ETA \?/);
    now = 13_000; // 2 epochs in 10 s: 5 s per epoch
    const l = p.lines(sweep([cell('a', 'running', 5, { lastValAccuracy: 0.625 }), cell('b', 'pending', 0)]));
    expect(l.cells).toEqual(['  demo rgb finetune resnet18 seed 0: epoch 5/10, val 62.5%, ETA 25 s (local-0)']);
    // 15 epochs left at 0.2 epochs/s
    expect(l.overall).toBe(' 25% 0/2 done, 1 running, 0 failed; epochs 5/20; ETA 1 min 15 s');
    const f = p.lines(
      sweep([cell('a', 'running', 5), cell('b', 'failed', 0, { error: 'FERRY_ERR_DATASET: no val/' })]),
    );
    expect(f.news).toEqual(['failed: demo gray finetune resnet18 seed 0: FERRY_ERR_DATASET: no val/']);
    expect(
      p.lines(sweep([cell('a', 'running', 5), cell('b', 'failed', 0, { error: 'FERRY_ERR_DATASET: no val/' })])).news,
    ).toEqual([]);
  });

  test("a cell's start-up is not taken for an epoch: the ETA after its second epoch is the epochs' pace", () => {
    let now = 0;
    const p = new RunProgress({ env: {}, stdout: new Sink(), stderr: new Sink() }, () => now);
    const at = (t: number, epoch: number) => {
      now = t;
      return p.lines(sweep([cell('a', 'running', epoch)]));
    };
    at(0, 0);
    // 20 s of start-up, then epochs of 5 s.
    expect(at(25_000, 1).cells[0]).toMatch(/epoch 1\/10, ETA \?/);
    expect(at(30_000, 2).cells[0]).toMatch(/epoch 2\/10, ETA 40 s/);
    expect(at(35_000, 3).overall).toMatch(/ETA 35 s$/);
    // Resumed on another worker after 60 s away: its start-up there is not an epoch either.
    now = 95_000;
    p.lines(sweep([cell('a', 'running', 3, { attempts: 2, worker: 'local-1' })]));
    now = 100_000;
    expect(p.lines(sweep([cell('a', 'running', 4, { attempts: 2, worker: 'local-1' })])).cells[0]).toMatch(
      /epoch 4\/10, ETA 30 s/,
    );
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

  test('cells of a later stage waiting for their source are said as waiting (one line per source), not as stuck; blocked cells are said once', () => {
    const stderr = new Sink();
    const p = new RunProgress({ env: {}, stdout: new Sink(), stderr }, () => 0);
    const dep = (id: string, state: string, extra: Partial<SweepStatus['cells'][number]> = {}) =>
      cell(id, state, 0, {
        ...extra,
        spec: { ...cell(id, state, 0).spec!, dataset: 'target', weights: 'cell:src00000000' },
      });
    const source = (state: string, error = '') => cell('src00000000', state, 1, { error });
    const waiting = sweep([source('running'), dep('a', 'pending'), dep('b', 'pending')]);
    const l = p.lines(waiting);
    expect(l.overall).toBe('  3% 0/3 done, 1 running, 2 waiting, 0 failed; epochs 1/30; ETA ?');
    expect(l.news).toEqual(['waiting for demo gray finetune resnet18 seed 0 (src00000, running): 2 cell(s)']);
    // Said once without a terminal.
    expect(p.lines(waiting).news).toEqual([]);
    // Nothing runs and the source waits for a retry with an error: only the source is a stall, never its dependants.
    const stalled = sweep([source('pending', 'FERRY_ERR_DATASET: no val/'), dep('a', 'pending'), dep('b', 'pending')]);
    const stall = { since: Date.now() - 60_000 };
    expect(() => checkStall(stalled, [], stall, p, '/out')).toThrow(
      /no worker can run 1 pending cell\(s\)[^]*demo gray finetune resnet18 seed 0: FERRY_ERR_DATASET: no val\/\n[^ ]/,
    );
    // Waiting cells alone (the source runs elsewhere, or nothing has an error) are no stall.
    const quiet = { since: Date.now() - 60_000 };
    checkStall(sweep([source('pending'), dep('a', 'pending')]), [], quiet, p, '/out');
    expect(quiet.since).toBeUndefined();
    const blocked = p.lines(
      sweep([
        source('failed', 'FERRY_ERR_DATASET: no val/'),
        dep('a', 'blocked', { error: 'blocked by src00000 (demo gray finetune resnet18 seed 0) which failed' }),
      ]),
    );
    expect(blocked.news).toContain(
      'blocked: target rgb finetune resnet18 seed 0: blocked by src00000 (demo gray finetune resnet18 seed 0) which failed',
    );
    expect(blocked.overall).toContain('0/2 done, 0 running, 1 blocked, 1 failed');
  });
});
