#!/usr/bin/env node
// bench/e2e: one finetune and one freeze cell end to end, `ferry train` against the same cell in
// PyTorch (bench/e2e/torch_train.py: the study's script) on the same machine in the same run:
// process start to result, decoding included. The images are the demo's shapes drawn at 256 px
// (PNG, as photographs would be decoded and resized); both start from the same ResNet18 weights
// (torchvision's initialisation, saved by Debian's torch: no download). One JSON line per cell and
// engine (ferry lines carry `vs_pytorch`: PyTorch's wall time over ferry's), then a summary line.
//
// usage: node bench/e2e/run.mjs [--strategies finetune,freeze] [--size 112] [--epochs 15]
//                               [--train-per-class 40] [--val-per-class 12] [--backend torch]
//                               [--views 1] [--workers 2] [--torch-threads N] [--python /usr/bin/python3]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeDemoDataset } from '@ferry/core';

const here = path.dirname(new URL(import.meta.url).pathname);
const ferryBin = path.join(here, '..', '..', 'packages', 'cli', 'bin', 'ferry.js');
const { values } = parseArgs({
  options: {
    strategies: { type: 'string', default: 'finetune,freeze' },
    size: { type: 'string', default: '112' },
    epochs: { type: 'string', default: '15' },
    'train-per-class': { type: 'string', default: '40' },
    'val-per-class': { type: 'string', default: '12' },
    backend: { type: 'string', default: 'torch' },
    views: { type: 'string', default: '1' },
    workers: { type: 'string', default: '2' },
    // Debian's torch takes one thread per physical core (1 on a 2-vCPU machine): all cores, as ferry.
    'torch-threads': { type: 'string', default: String(os.availableParallelism()) },
    python: { type: 'string', default: '/usr/bin/python3' },
  },
});

const dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-e2e-'));
const data = path.join(dir, 'demo');
const { images } = await writeDemoDataset(data, {
  trainPerClass: Number(values['train-per-class']),
  valPerClass: Number(values['val-per-class']),
  size: 256,
  seed: 0,
});
const weights = path.join(dir, 'resnet18.pth');
execFileSync(values.python, [
  '-c',
  `import torch, torchvision; torch.manual_seed(0); torch.save(torchvision.models.resnet18().state_dict(), ${JSON.stringify(weights)})`,
]);

const machine = { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, node: process.versions.node };
const timed = (cmd, args) => {
  const t0 = performance.now();
  const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
  return { out, wallS: (performance.now() - t0) / 1000 };
};

const summary = [];
for (const strategy of values.strategies.split(',')) {
  const common = { strategy, size: Number(values.size), epochs: Number(values.epochs), images };
  const torch = timed(values.python, [
    path.join(here, 'torch_train.py'),
    ...['--data', data, '--weights', weights, '--strategy', strategy],
    ...['--size', values.size, '--epochs', values.epochs, '--workers', values.workers],
    ...['--threads', values['torch-threads']],
  ]);
  const t = JSON.parse(torch.out.trim().split('\n').at(-1));
  console.log(JSON.stringify({ ...t, wall_s: +torch.wallS.toFixed(2), machine }));
  const outDir = path.join(dir, `ferry-${strategy}`);
  const ferry = timed(process.execPath, [
    ferryBin,
    'train',
    ...['-d', data, '-m', 'resnet18', '--weights', weights, '--strategy', strategy],
    ...['--size', values.size, '--epochs', values.epochs, '--views', values.views],
    ...['--backend', values.backend, '--out', outDir],
  ]);
  const result = JSON.parse(readFileSync(path.join(outDir, 'result.json'), 'utf8'));
  const line = {
    engine: 'ferry',
    backend: values.backend,
    ...common,
    views: Number(values.views),
    wall_s: +ferry.wallS.toFixed(2),
    best_val_accuracy: +result.bestValAccuracy.toFixed(4),
    vs_pytorch: +(torch.wallS / ferry.wallS).toFixed(3),
    pytorch_wall_s: +torch.wallS.toFixed(2),
    machine,
  };
  console.log(JSON.stringify(line));
  summary.push({ strategy, ferry_s: line.wall_s, pytorch_s: line.pytorch_wall_s, vs_pytorch: line.vs_pytorch });
}
console.log(JSON.stringify({ summary }));
