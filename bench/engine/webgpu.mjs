#!/usr/bin/env node
// WebGPU training speed, before and after ferry's kernels, with PyTorch on the same GPU in the
// same run: resnet18 224x224 training at each batch size; for each, TensorFlow.js's own WebGPU
// kernels (FERRY_WEBGPU_FAST=0 path) and ferry's (registered filter gradients, fused BatchNorm and
// SGD), each in its own process (bench/engine/profile.mjs). One JSON line per case, then a summary.
//
// usage: node bench/engine/webgpu.mjs [--batches 32,64,128] [--size 224] [--steps 5]
//          [--python python3] [--paths tfjs,ferry] [--profile-script path/to/profile.mjs]
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runJson } from './common.mjs';

const here = path.dirname(new URL(import.meta.url).pathname);
const { values } = parseArgs({
  options: {
    batches: { type: 'string', default: '32,64,128' },
    size: { type: 'string', default: '224' },
    steps: { type: 'string', default: '5' },
    model: { type: 'string', default: 'resnet18' },
    python: { type: 'string', default: 'python3' },
    paths: { type: 'string', default: 'tfjs,ferry' },
    'profile-script': { type: 'string', default: path.join(here, 'profile.mjs') },
    'torch-script': { type: 'string', default: path.join(here, 'torch_bench.py') },
    timeout: { type: 'string', default: '240' },
  },
});
const list = (s) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

const run = (cmd, args) => runJson(cmd, args, Number(values.timeout) * 1000);

const machine = { cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model, node: process.versions.node };
const summary = [];
for (const batch of list(values.batches).map(Number)) {
  const common = ['--model', values.model, '--size', values.size, '--batch', String(batch), '--steps', values.steps];
  const torch = run(values.python, [values['torch-script'], ...common, '--mode', 'train', '--device', 'cuda']);
  console.log(JSON.stringify({ ...torch, batch, machine }));
  const row = { batch, pytorch_images_per_sec: torch.images_per_sec ?? null };
  for (const p of list(values.paths)) {
    const r = run(process.execPath, [
      values['profile-script'],
      '--backend',
      'webgpu',
      ...common,
      '--fast',
      p === 'ferry' ? '1' : '0',
    ]);
    const vs = r.images_per_sec && torch.images_per_sec ? +(r.images_per_sec / torch.images_per_sec).toFixed(4) : null;
    console.log(JSON.stringify({ ...r, batch, vs_pytorch: vs, machine }));
    row[p] = r.error
      ? { error: r.error }
      : {
          images_per_sec: r.images_per_sec,
          programs_per_step: r.programs_per_step,
          kernels_per_step: r.kernels_per_step ?? null,
          gpu_ms_per_step: r.gpu_ms_per_step ?? null,
          host_queue_ms_per_step: r.host_queue_ms_per_step,
          vs_pytorch: vs,
        };
  }
  if (row.tfjs?.images_per_sec && row.ferry?.images_per_sec)
    row.speedup = +(row.ferry.images_per_sec / row.tfjs.images_per_sec).toFixed(2);
  summary.push(row);
}
console.log(JSON.stringify({ summary }));
