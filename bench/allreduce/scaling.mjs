#!/usr/bin/env node
// bench/allreduce scaling: one finetuning cell (resnet18 layout at 1/8 width by default) trained by
// 1 worker, then as a `workers: 2` data-parallel cell by 2 workers, through `ferry run` (real
// processes, the ring link). Prints images/s, the speed-up and, from the workers' logs, each rank's
// split of a step between compute and the gradient all-reduce, as JSON. The machine's cores are
// shared: 1 worker gets all of them, each of 2 workers half.
// usage: node bench/allreduce/scaling.mjs [--model resnet_tiny] [--size 64] [--epochs 3] [--batch 32]
//                                         [--backend torch]
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
    backend: { type: 'string', default: 'torch' },
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
      values.backend,
    ],
    { stdio: 'ignore' },
  );
  const wall = (performance.now() - t0) / 1000;
  const r = JSON.parse(readFileSync(path.join(tmp, `run${k}`, 'results.json'), 'utf8')).cells[0].result;
  // "... N steps, compute C ms and gradient all-reduce A ms a step (P% of the step, B MB)", per rank and epoch.
  const shares = [];
  for (let i = 0; i < k; i++) {
    const log = readFileSync(path.join(tmp, `run${k}`, 'logs', `worker-${i}.log`), 'utf8');
    for (const m of log.matchAll(
      /rank (\d+) of \d+\): (\d+) steps, compute (\d+) ms and gradient all-reduce (\d+) ms a step \((\d+)% of the step, ([\d.]+) MB\)/g,
    ))
      shares.push({
        rank: +m[1],
        steps: +m[2],
        compute_ms: +m[3],
        all_reduce_ms: +m[4],
        share: +m[5] / 100,
        mb: +m[6],
      });
  }
  out[k] = {
    ...(shares.length ? { all_reduce: shares } : {}),
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
    backend: values.backend,
    cpus: os.availableParallelism(),
    one_worker: out[1],
    two_workers: out[2],
    speedup_images_per_sec: +(out[2].images_per_sec / out[1].images_per_sec).toFixed(2),
  }),
);
