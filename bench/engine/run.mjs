#!/usr/bin/env node
// bench/engine: resnet18 train-step, freeze-step and inference images/s and peak RSS, for every
// available TensorFlow.js backend and for PyTorch on the same machine in the same run.
// Prints one JSON line per case (ferry lines carry `vs_pytorch`), then a summary line.
//
// usage: node bench/engine/run.mjs [--backends wasm,cpu] [--sizes 224,112] [--batches 16,32]
//                                  [--modes inference,freeze,train] [--steps 2] [--torch-threads N]
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { probeAllBackends } from '@ferry/core';
import { runJson } from './common.mjs';

const here = path.dirname(new URL(import.meta.url).pathname);
const { values } = parseArgs({
  options: {
    backends: { type: 'string' },
    sizes: { type: 'string', default: '224,112' },
    batches: { type: 'string', default: '16,32' },
    modes: { type: 'string', default: 'inference,freeze,train' },
    steps: { type: 'string', default: '2' },
    model: { type: 'string', default: 'resnet18' },
    'torch-threads': { type: 'string', default: String(os.availableParallelism()) },
    python: { type: 'string', default: '/usr/bin/python3' },
  },
});
const list = (s) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
const backends = values.backends
  ? list(values.backends)
  : (await probeAllBackends()).filter((p) => p.available).map((p) => p.name);
const sizes = list(values.sizes).map(Number);
const batches = list(values.batches).map(Number);
const modes = list(values.modes);

const run = (cmd, args) => runJson(cmd, args);

const machine = { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, node: process.versions.node };
const summary = [];
for (const size of sizes)
  for (const batch of batches)
    for (const mode of modes) {
      const common = [
        '--model',
        values.model,
        '--size',
        String(size),
        '--batch',
        String(batch),
        '--mode',
        mode,
        '--steps',
        values.steps,
      ];
      const torch = run(values.python, [
        path.join(here, 'torch_bench.py'),
        ...common,
        '--threads',
        values['torch-threads'],
      ]);
      console.log(JSON.stringify({ ...torch, machine }));
      for (const backend of backends) {
        const r = run(process.execPath, [path.join(here, 'case.mjs'), '--backend', backend, ...common]);
        const ratio =
          r.images_per_sec && torch.images_per_sec ? +(r.images_per_sec / torch.images_per_sec).toFixed(3) : null;
        console.log(
          JSON.stringify({
            ...r,
            backend,
            size,
            batch,
            mode,
            vs_pytorch: ratio,
            pytorch_images_per_sec: torch.images_per_sec ?? null,
            machine,
          }),
        );
        summary.push({ backend, size, batch, mode, vs_pytorch: ratio });
      }
    }
console.log(JSON.stringify({ summary }));
