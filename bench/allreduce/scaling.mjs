#!/usr/bin/env node
// bench/allreduce scaling: one finetuning cell (resnet18 layout at 1/8 width by default) trained by
// 1 worker, then as a `workers: 2` data-parallel cell by 2 workers, through `ferry run` (real
// processes, the ring link). Prints images/s and the speed-up as JSON. The machine's cores are shared:
// 1 worker gets all of them, each of 2 workers half.
// usage: node bench/allreduce/scaling.mjs [--model resnet_tiny] [--size 64] [--epochs 3] [--batch 32]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'resnet_tiny' },
    size: { type: 'string', default: '64' },
    epochs: { type: 'string', default: '3' },
    batch: { type: 'string', default: '32' },
  },
});
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const bin = path.join(root, 'packages/cli/bin/ferry.js');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'ferry-scaling-'));
execFileSync(process.execPath, [bin, 'data', 'demo', path.join(tmp, 'data', 'demo'), '--size', values.size], {
  stdio: 'ignore',
});
const out = {};
for (const k of [1, 2]) {
  const sweep = path.join(tmp, `s${k}.yaml`);
  writeFileSync(
    sweep,
    `name: scale${k}\ndatasets: [{ name: demo, path: demo }]\ncolors: [rgb]\nstrategies: [finetune]\nmodels: [${values.model}]\nhyper: { weights: none, epochs: ${values.epochs}, batchSize: ${values.batch}, lr: 0.02, imageSize: ${values.size}, workers: ${k} }\n`,
  );
  const t0 = performance.now();
  execFileSync(
    process.execPath,
    [
      bin,
      'run',
      sweep,
      '--workers',
      String(k),
      '--no-nats',
      '--data-root',
      path.join(tmp, 'data'),
      '--out',
      path.join(tmp, `run${k}`),
      '--backend',
      'wasm',
    ],
    { stdio: 'ignore' },
  );
  const wall = (performance.now() - t0) / 1000;
  const r = JSON.parse(readFileSync(path.join(tmp, `run${k}`, 'results.json'), 'utf8')).cells[0].result;
  out[k] = {
    images_per_sec: r.imagesPerSec,
    cell_wall_s: r.wallMs / 1000,
    run_wall_s: wall,
    best_val_accuracy: r.bestValAccuracy,
  };
}
console.log(
  JSON.stringify({
    bench: 'dp-scaling',
    model: values.model,
    size: Number(values.size),
    batch: Number(values.batch),
    epochs: Number(values.epochs),
    cpus: os.availableParallelism(),
    one_worker: out[1],
    two_workers: out[2],
    speedup_images_per_sec: +(out[2].images_per_sec / out[1].images_per_sec).toFixed(2),
  }),
);
