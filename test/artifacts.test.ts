import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { Rng, readNpy, writeDemoDataset, writeNpy } from '@ferry/core';
import { ferry } from './helpers/cli.js';
import { getSweep, kill, startCoordinator, startWorker, submit, waitFor, type Proc } from './helpers/cluster.js';
import { REPO_ROOT, readNpy64 } from './helpers/torch-ref.js';

const procs: Proc[] = [];
afterAll(async () => {
  for (const p of procs.splice(0)) await kill(p);
});
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-artifacts-'));

// Two cells on a learning-rate axis: their files are told apart by it.
const SWEEP = `name: artifacts
datasets: [{ name: demo, path: demo }]
colors: [rgb]
strategies: [finetune]
models: [resnet18]
seeds: [0]
hyper: { weights: none, epochs: 1, batchSize: 8, imageSize: 32, lr: [0.01, 0.001], augmentViews: 0 }
`;

// Waits: a resnet18 cell of 1 epoch at 32 px on 32 images takes a few seconds on wasm; two cells
// in turn (60 s, generous), the artifacts and the torchvision run (30 s), the coordinator start (10 s).
test(
  "ferry sweep artifacts: each done cell's best weights with readable names and metadata; torchvision loads them and gives ferry's logits",
  { timeout: 100_000 },
  async () => {
    const dataRoot = tmp();
    await writeDemoDataset(path.join(dataRoot, 'demo'), { trainPerClass: 4, valPerClass: 2, size: 32 });
    const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp()]);
    procs.push(coord);
    const conn = { address: coord.address };
    const worker = startWorker(coord.address, { name: 'w', dataRoot, workDir: tmp(), cacheDir: tmp() });
    procs.push(worker);
    const sweepId = await submit(conn, SWEEP);
    const done = await waitFor('both cells done', 60_000, async () => {
      const s = await getSweep(conn, sweepId);
      return s.done === 2 ? s : undefined;
    });

    const out = tmp();
    const r = await ferry(['sweep', 'artifacts', sweepId, '--out', out, '--coordinator', coord.address]);
    expect(r.stderr, worker.log()).toBe('');
    expect(r.code).toBe(0);
    for (const lr of [0.01, 0.001]) {
      const base = path.join(out, `demo-rgb-finetune-resnet18-s0-lr${lr}`);
      expect(existsSync(`${base}.safetensors`), base).toBe(true);
      const meta = JSON.parse(readFileSync(`${base}.json`, 'utf8')) as {
        cellId: string;
        classes: string[];
        transform: { resize: number; crop: number; mean: number[] };
        bestValAccuracy: number;
      };
      const cell = done.cells.find((c) => c.cellId === meta.cellId)!;
      expect(cell.spec!.lr).toBe(lr);
      expect(meta.classes).toEqual(cell.result!.classes);
      expect(meta.bestValAccuracy).toBe(cell.result!.bestValAccuracy);
      expect(meta.transform).toMatchObject({ resize: 37, crop: 32, mean: [0.485, 0.456, 0.406] });
    }

    // The artifact in Debian's torchvision against ferry predict on the same input.
    const weights = path.join(out, 'demo-rgb-finetune-resnet18-s0-lr0.01.safetensors');
    const rng = Rng.fromSeed(3);
    const input = Float32Array.from({ length: 2 * 3 * 32 * 32 }, () => rng.normal());
    const inputFile = path.join(out, 'x.npy');
    writeFileSync(inputFile, writeNpy(input, [2, 3, 32, 32]));
    const prefix = path.join(out, 'torch');
    execFileSync('/usr/bin/python3', [
      path.join(REPO_ROOT, 'test/fixtures/load_artifact.py'),
      weights,
      'resnet18',
      '4',
      inputFile,
      prefix,
    ]);
    const want = readNpy64(`${prefix}64.npy`).data;
    const torch32 = readNpy(readFileSync(`${prefix}32.npy`)).data;
    const p = await ferry([
      'predict',
      '--model',
      'resnet18',
      '--weights',
      weights,
      '--input',
      inputFile,
      '--backend',
      'wasm',
      '--json',
    ]);
    expect(p.code, p.stderr).toBe(0);
    const got = (JSON.parse(p.stdout) as { logits: number[][] }).logits.flat();
    expect(got).toHaveLength(want.length);
    // ferry's float32 against torch's float64 within 16x torch's own float32 error (or 1e-6 of the
    // logits' scale), the rule of packages/core/test/parity.test.ts; and within 1e-4 as the issue asks.
    const err32 = Math.max(...Array.from(want, (w, i) => Math.abs(torch32[i]! - w)));
    const scale = Math.max(...Array.from(want, Math.abs));
    const tolerance = Math.min(16 * Math.max(err32, 1e-6 * scale), 1e-4 * Math.max(1, scale));
    const diff = Math.max(...got.map((v, i) => Math.abs(v - want[i]!)));
    expect(diff, JSON.stringify({ err32, scale, tolerance })).toBeLessThan(tolerance);

    // No artifact for a cell that is not done: the command says so and fails.
    const none = await ferry(['sweep', 'artifacts', 'no-such-sweep', '--out', out, '--coordinator', coord.address]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('FERRY_ERR_NOT_FOUND');
  },
);
