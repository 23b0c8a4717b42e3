#!/usr/bin/env node
// One training-step census in its own process: images/s (steps awaited one by one, and pipelined
// as the trainer runs them: the next step queued before the last one's loss is read), host time to
// queue a step, GPU time per step (webgpu timestamp queries through tf.profile), TF.js kernels and
// GPU programs dispatched per step. Prints one JSON line.
// usage: node bench/engine/profile.mjs --backend webgpu --model resnet18 --size 224 --batch 32
//          [--fast 1|0] [--steps 5] [--no-profile]
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '@ferry/core';
import { trainingSetup } from './common.mjs';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'webgpu' },
    model: { type: 'string', default: 'resnet18' },
    size: { type: 'string', default: '224' },
    batch: { type: 'string', default: '32' },
    steps: { type: 'string', default: '5' },
    classes: { type: 'string', default: '20' },
    top: { type: 'string', default: '10' },
    fast: { type: 'string', default: '1' },
    'no-profile': { type: 'boolean', default: false },
  },
});
const size = Number(values.size);
const batch = Number(values.batch);
const classes = Number(values.classes);
const fast = values.fast !== '0';
const backend = await selectBackend(values.backend, { webgpuProfiling: true, webgpuFastPath: fast });
const { x, labels, shape, trainer } = trainingSetup({ model: values.model, classes, size, batch, microBatch: batch });
const batchArgs = { x, shape, labels };

// Count GPU programs: every webgpu kernel ends in runWebGPUProgram.
const be = tf.backend();
let programs = 0;
const programNames = new Map();
if (typeof be.runWebGPUProgram === 'function') {
  const orig = be.runWebGPUProgram.bind(be);
  be.runWebGPUProgram = (program, ...rest) => {
    programs++;
    const n = program.constructor?.name ?? 'program';
    programNames.set(n, (programNames.get(n) ?? 0) + 1);
    return orig(program, ...rest);
  };
}
await trainer.trainStep(batchArgs, 0.001); // warm-up: pipelines compiled, momentum buffers made
await trainer.trainStep(batchArgs, 0.001);
const steps = Number(values.steps);

// Sequential: queue, then wait for the read-back, step after step.
programs = 0;
programNames.clear();
let hostMs = 0;
let t0 = performance.now();
for (let i = 0; i < steps; i++) {
  const h0 = performance.now();
  const p = trainer.trainStep(batchArgs, 0.001); // queues synchronously, then reads back
  hostMs += performance.now() - h0;
  await p;
}
const sequentialMs = (performance.now() - t0) / steps;
const programsPerStep = programs / steps;
const byProgram = [...programNames].map(([k, v]) => [k, v / steps]).sort((a, b) => b[1] - a[1]);

// Pipelined: as Trainer.run does it, each step's loss read after the next step is queued.
t0 = performance.now();
let prev;
for (let i = 0; i < steps; i++) {
  const p = trainer.trainStep(batchArgs, 0.001);
  if (prev) await prev;
  prev = p;
}
await prev;
const pipelinedMs = (performance.now() - t0) / steps;

// One profiled step: the kernel census and GPU time (kernel times need timestamp queries).
let census = {};
if (!values['no-profile']) {
  const profile = await tf.profile(async () => {
    await trainer.trainStep(batchArgs, 0.001);
  });
  const byKernel = new Map();
  let gpuMs = 0;
  let timed = backend.timestampQuery === true;
  for (const k of profile.kernels) {
    const e = byKernel.get(k.name) ?? { calls: 0, ms: 0 };
    e.calls++;
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : NaN;
    if (Number.isNaN(ms)) timed = false;
    else {
      e.ms += ms;
      gpuMs += ms;
    }
    byKernel.set(k.name, e);
  }
  const top = [...byKernel]
    .sort((a, b) => b[1].ms - a[1].ms || b[1].calls - a[1].calls)
    .slice(0, Number(values.top))
    .map(([name, e]) => ({ name, calls: e.calls, ms: +e.ms.toFixed(2) }));
  census = {
    kernels_per_step: profile.kernels.length,
    gpu_ms_per_step: timed ? +gpuMs.toFixed(1) : null,
    top_kernels: top,
  };
}
console.log(
  JSON.stringify({
    engine: 'ferry',
    path: backend.name === 'webgpu' ? (fast ? 'ferry-kernels' : 'tfjs-kernels') : 'default',
    backend: backend.name,
    device: backend.device,
    model: values.model,
    size,
    batch,
    steps,
    ms_per_step: +pipelinedMs.toFixed(1),
    images_per_sec: +((batch * 1000) / pipelinedMs).toFixed(2),
    sequential_ms_per_step: +sequentialMs.toFixed(1),
    host_queue_ms_per_step: +(hostMs / steps).toFixed(1),
    programs_per_step: programsPerStep,
    timestamp_query: backend.timestampQuery === true,
    fast_kernels: backend.workarounds.map((w) => w.split(':')[0]),
    ...census,
    programs_by_class: Object.fromEntries(byProgram.slice(0, Number(values.top))),
  }),
);
