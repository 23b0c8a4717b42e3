import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { writeDemoDataset } from '@ferry/core';
import { getSweep, kill, startCoordinator, startWorker, submit, waitFor, type Proc } from './helpers/cluster.js';

/**
 * A libtorch failure inside a real worker (`ferry worker --backend torch`, real coordinator): the
 * torch backend's memory cap (FERRY_TORCH_MEMORY_MIB) makes an out-of-memory happen on purpose,
 * the same on every machine. ResNet18's weights alone (45 MB, nearly all in buffers of 1 MiB and
 * more) do not fit 32 MiB; resnet_tiny's whole training does.
 */

const procs: Proc[] = [];
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-native-'));
let dataRoot = '';

beforeAll(async () => {
  dataRoot = tmp();
  await writeDemoDataset(path.join(dataRoot, 'demo'), { trainPerClass: 12, valPerClass: 4, size: 32, seed: 3 });
});

afterAll(async () => {
  for (const p of procs) await kill(p);
});

const sweep = (name: string, model: string): string => `name: ${name}
datasets: [{ name: demo, path: demo }]
colors: [rgb]
strategies: [finetune]
models: [${model}]
hyper: { weights: none, epochs: 1, batchSize: 8, lr: 0.02, imageSize: 32 }
`;

/** The sweep's one cell once it is done or failed. */
const ended = (conn: { address: string }, sweepId: string, what: string, timeoutMs: number) =>
  waitFor(
    what,
    timeoutMs,
    async () => {
      const c = (await getSweep(conn, sweepId)).cells[0]!;
      return c.state === 'done' || c.state === 'failed' ? c : undefined;
    },
    250,
  );

function torchWorker(address: string, name: string, env: Record<string, string> = {}): Proc {
  const p = startWorker(address, {
    name,
    dataRoot,
    workDir: path.join(tmp(), name),
    cacheDir: tmp(),
    extra: ['--backend', 'torch'],
    env,
  });
  procs.push(p);
  return p;
}

test('an out-of-memory in libtorch fails the cell on that worker with a coded error, the worker runs its next cell, and another worker finishes the first', async () => {
  const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp()]);
  procs.push(coord);
  const conn = { address: coord.address };
  const capped = torchWorker(coord.address, 'capped', { FERRY_TORCH_MEMORY_MIB: '32' });

  const big = await submit(conn, sweep('big', 'resnet18'));
  const refused = await waitFor(
    'the capped worker to give the resnet18 cell back',
    120_000,
    async () => {
      const c = (await getSweep(conn, big)).cells[0]!;
      return c.error ? c : undefined;
    },
    250,
  );
  // Back in the queue for another worker, not failed, and without using an attempt: this
  // worker's memory was the problem, not the cell.
  expect(refused.state).toBe('pending');
  expect(refused.attempts).toBe(0);
  expect(refused.error).toMatch(/torch backend, kernel \w+: out of memory: .*limit of 32 MiB/);
  expect(capped.log()).toMatch(/failed: FERRY_ERR_NATIVE_KERNEL: torch backend, kernel \w+: out of memory/);

  // The same process goes on serving: a cell that fits the cap runs to its end on it.
  const small = await submit(conn, sweep('small', 'resnet_tiny'));
  const done = await ended(conn, small, 'the resnet_tiny cell on the capped worker', 120_000);
  expect(done).toMatchObject({ state: 'done', error: '' });
  expect(capped.child.exitCode).toBeNull();
  expect(capped.log()).toMatch(new RegExp(`cell ${done.cellId}: best val`));
  // The capped worker is not offered the refused cell again.
  expect((await getSweep(conn, big)).cells[0]!.state).toBe('pending');

  // A worker without the cap takes the refused cell and finishes it.
  const roomy = torchWorker(coord.address, 'roomy');
  const finished = await ended(conn, big, 'the resnet18 cell on the uncapped worker', 180_000);
  expect(finished.state).toBe('done');
  expect(roomy.log()).toMatch(new RegExp(`cell ${finished.cellId}: best val`));
  expect(capped.log()).not.toMatch(new RegExp(`cell ${finished.cellId}: best val`));
}, 420_000);
