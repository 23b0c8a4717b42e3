import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { readWeightsFile, writeDemoDataset, writeDemoSourceDataset } from '@ferry/core';
import { adminClient, downloadArtifact, unary } from '@ferry/client';
import {
  attemptsOf,
  epochIndices,
  getSweep,
  kill,
  startCoordinator,
  startWorker,
  waitFor,
  type Proc,
} from './helpers/cluster.js';

/**
 * A two-stage sweep over real processes (`ferry coordinator`, two `ferry worker`s, gRPC): a
 * pretrain cell on the demo's source domain, then finetune and freeze cells on the target that
 * start from its best weights (`weights: stage:pretrain`), with kill -9 of a worker during the
 * second stage.
 */
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-stages-'));
const procs: Proc[] = [];
let dataRoot = '';
const LEASE_MS = 2000;
const FAST = ['--lease-ms', String(LEASE_MS), '--heartbeat-ms', '200'];
const TARGET_EPOCHS = 6;
/** Bounds on the waits (2 cores, shared). */
const START_MS = 30_000; // processes started, the pretrain cell done, a stage-2 checkpoint of 2 epochs
const SWEEP_MS = 60_000; // the rest of the sweep after the kill

const SWEEP = `name: stages-kill
stages:
  - name: pretrain
    datasets: [{ name: shapes, path: source }]
    strategies: [finetune]
    models: [resnet_tiny]
    hyper: { weights: none, epochs: 2, batchSize: 16, lr: 0.02, imageSize: 32 }
  - name: target
    datasets: [{ name: demo, path: demo }]
    strategies: [finetune, freeze]
    models: [resnet_tiny]
    hyper: { weights: "stage:pretrain", epochs: ${TARGET_EPOCHS}, batchSize: 16, lr: 0.02, imageSize: 32 }
`;

beforeAll(async () => {
  dataRoot = tmp();
  const opts = { trainPerClass: 12, valPerClass: 4, size: 32, seed: 3 };
  await writeDemoSourceDataset(path.join(dataRoot, 'source'), opts);
  await writeDemoDataset(path.join(dataRoot, 'demo'), opts);
});

afterAll(async () => {
  for (const p of procs.splice(0)) await kill(p);
});

const sha256 = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

/** Tensors a freeze leaves as they were: every weight but the head and BatchNorm running statistics. */
const frozen = (name: string): boolean => !/^fc\.|running_(mean|var)$|num_batches_tracked$/.test(name);

test(
  'a two-stage sweep with kill -9 of a worker during the second stage: dependants wait for the pretrain cell, start from its best weights (fetched once per worker), and every cell completes exactly once',
  async () => {
    const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp(), ...FAST]);
    procs.push(coord);
    const conn = { address: coord.address };
    const caches = { wa: tmp(), wb: tmp() };
    const workers = {
      wa: startWorker(coord.address, { name: 'wa', dataRoot, workDir: tmp(), cacheDir: caches.wa }),
      wb: startWorker(coord.address, { name: 'wb', dataRoot, workDir: tmp(), cacheDir: caches.wb }),
    };
    procs.push(workers.wa, workers.wb);
    const admin = adminClient(conn);
    const submit = () =>
      unary(
        admin.submitSweep,
        admin,
        { yaml: SWEEP, fileName: 't.yaml', datasetFingerprints: {}, maxAttempts: 0 },
        conn,
        10_000,
      );
    const sub = await submit();
    expect([sub.cells, sub.newCells]).toEqual([3, 3]);

    // While the pretrain cell runs, the two dependants wait for it (pending, never assigned).
    const early = await getSweep(conn, sub.sweepId);
    const source = early.cells.find((c) => c.spec!.dataset === 'shapes')!;
    const dependants = early.cells.filter((c) => c.cellId !== source.cellId);
    expect(dependants.map((c) => c.spec!.weights)).toEqual([`cell:${source.cellId}`, `cell:${source.cellId}`]);
    expect(early.waiting).toBe(2);
    expect(dependants.map((c) => [c.state, c.attempts])).toEqual([
      ['pending', 0],
      ['pending', 0],
    ]);

    // kill -9 of the worker of a stage-2 cell with a checkpoint of 2 epochs.
    const victim = await waitFor('a stage-2 cell with a checkpoint of 2 epochs', START_MS, async () => {
      const s = await getSweep(conn, sub.sweepId);
      const src = s.cells.find((c) => c.cellId === source.cellId)!;
      const running = s.cells.find(
        (c) => c.cellId !== source.cellId && c.state === 'running' && c.checkpointEpochs >= 2,
      );
      // No dependant ever ran before its source was done.
      if (src.state !== 'done') expect(s.cells.filter((c) => c.cellId !== source.cellId && c.attempts > 0)).toEqual([]);
      return running;
    });
    const victimName = victim.worker as 'wa' | 'wb';
    const survivorName = victimName === 'wa' ? 'wb' : 'wa';
    await kill(workers[victimName], 'SIGKILL');

    const done = await waitFor(
      'the sweep to finish',
      SWEEP_MS,
      async () => {
        const s = await getSweep(conn, sub.sweepId);
        return s.done === 3 ? s : undefined;
      },
      250,
    );
    // Every cell once, every epoch once and in order; one more attempt for the killed worker's cell.
    expect(epochIndices(done)).toEqual({
      [source.cellId]: [0, 1],
      ...Object.fromEntries(dependants.map((c) => [c.cellId, [...Array(TARGET_EPOCHS).keys()]])),
    });
    expect(attemptsOf(done)).toEqual({
      ...Object.fromEntries(done.cells.map((c) => [c.cellId, 1])),
      [victim.cellId]: 2,
    });
    expect(done.cells.find((c) => c.cellId === victim.cellId)!.result!.resumedFromEpoch).toBeGreaterThanOrEqual(2);

    // The workers' own account: each dependant attempt started from the source's best weights,
    // fetched from the coordinator once per worker (the resumed attempt found them cached).
    const logs = workers.wa.log() + workers.wb.log();
    const starts = logs.split(`starting from the best weights of cell ${source.cellId}`).length - 1;
    expect(starts).toBe(3);
    for (const name of ['wa', 'wb'] as const)
      expect(workers[name].log().split('fetched from the coordinator').length - 1).toBe(1);
    const resumed = workers[survivorName].log().split(`cell ${victim.cellId}: starting from the best weights`);
    expect(resumed.length - 1).toBe(1);

    // The weights a dependant started from are the pretrain cell's best weights, byte for byte...
    const out = tmp();
    const artifact = path.join(out, 'source.safetensors');
    await downloadArtifact(admin, conn, source.cellId, artifact);
    // Cached by id and content: the file named by its own digest's first 16 hex digits.
    const digest = sha256(artifact);
    const cached = path.join(
      caches[survivorName],
      'weights',
      'cells',
      `${source.cellId}.${digest.slice(0, 16)}.safetensors`,
    );
    expect(sha256(cached)).toBe(digest);
    // ...and training started from them: the freeze cell's frozen tensors are still the source's.
    const freeze = done.cells.find((c) => c.spec!.strategy === 'freeze')!;
    const freezeFile = path.join(out, 'freeze.safetensors');
    await downloadArtifact(admin, conn, freeze.cellId, freezeFile);
    const src = (await readWeightsFile(artifact)).tensors;
    const dep = (await readWeightsFile(freezeFile)).tensors;
    const names = [...src.keys()].filter(frozen);
    expect(names.length).toBeGreaterThan(10);
    for (const n of names)
      expect(Buffer.from(dep.get(n)!.data.buffer).equals(Buffer.from(src.get(n)!.data.buffer)), n).toBe(true);
    // The head is the target's own (4 classes; the source has 8), so the network did learn something new.
    expect([src.get('fc.weight')!.shape[0], dep.get('fc.weight')!.shape[0]]).toEqual([8, 4]);

    // The same sweep again: nothing new, nothing run again.
    const again = await submit();
    expect([again.sweepId, again.newCells]).toEqual([sub.sweepId, 0]);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(attemptsOf(await getSweep(conn, sub.sweepId))).toEqual(attemptsOf(done));
    admin.close();
  },
  START_MS + SWEEP_MS + 20_000,
);
