#!/usr/bin/env node
// Kernel census of one training step: TF.js kernels (tf.profile), GPU programs dispatched (webgpu),
// wall time, and GPU time when the backend has timestamp queries. Prints one JSON line.
// usage: node bench/engine/profile.mjs --backend webgpu --model resnet18 --size 224 --batch 32 [--steps 3]
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { ArrayBatchSource, DEFAULT_TRAIN_CONFIG, Network, Rng, Trainer, buildModel, selectBackend } from '@ferry/core';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'webgpu' },
    model: { type: 'string', default: 'resnet18' },
    size: { type: 'string', default: '224' },
    batch: { type: 'string', default: '32' },
    steps: { type: 'string', default: '3' },
    classes: { type: 'string', default: '20' },
    top: { type: 'string', default: '12' },
  },
});
const size = Number(values.size);
const batch = Number(values.batch);
const classes = Number(values.classes);
const backend = await selectBackend(values.backend, { webgpuProfiling: true });
const model = buildModel(values.model, classes);
const net = Network.create(model, { seed: 0 });
const rng = Rng.fromSeed(1);
const x = Float32Array.from({ length: batch * size * size * 3 }, () => rng.normal());
const labels = Int32Array.from({ length: batch }, (_, i) => i % classes);
const source = new ArrayBatchSource(x, labels, [size, size, 3], classes, { batchSize: batch, shuffle: false });
const trainer = new Trainer({ network: net, config: { ...DEFAULT_TRAIN_CONFIG, strategy: { kind: 'finetune' } }, train: source, val: source, microBatch: batch });
const step = () => trainer.trainStep({ x, shape: [batch, size, size, 3], labels }, 0.001);

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
await step(); // warm-up: pipelines, momentum buffers
const steps = Number(values.steps);
programs = 0;
programNames.clear();
const t0 = performance.now();
for (let i = 0; i < steps; i++) await step();
const wallMs = (performance.now() - t0) / steps;
const programsPerStep = programs / steps;
const byProgram = [...programNames].map(([k, v]) => [k, v / steps]).sort((a, b) => b[1] - a[1]);
// One profiled step for the kernel census and GPU time.
const profile = await tf.profile(async () => { await step(); });
const byKernel = new Map();
let gpuMs = 0;
let timed = true;
for (const k of profile.kernels) {
  const e = byKernel.get(k.name) ?? { calls: 0, ms: 0 };
  e.calls++;
  const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : NaN;
  if (Number.isNaN(ms)) timed = false; else { e.ms += ms; gpuMs += ms; }
  byKernel.set(k.name, e);
}
const top = [...byKernel].sort((a, b) => (b[1].ms - a[1].ms) || (b[1].calls - a[1].calls)).slice(0, Number(values.top))
  .map(([name, e]) => ({ name, calls: e.calls, ms: +e.ms.toFixed(2) }));
console.log(JSON.stringify({
  engine: 'ferry', backend: backend.name, device: backend.device, model: values.model, size, batch,
  ms_per_step: +wallMs.toFixed(1), images_per_sec: +((batch * 1000) / wallMs).toFixed(2),
  kernels_per_step: profile.kernels.length, programs_per_step: programsPerStep,
  gpu_ms_per_step: timed ? +gpuMs.toFixed(1) : null, timestamp_query: Boolean(be.supportTimestampQuery),
  fast_kernels: backend.workarounds.length,
  top_kernels: top, programs_by_class: Object.fromEntries(byProgram.slice(0, Number(values.top))),
}));
