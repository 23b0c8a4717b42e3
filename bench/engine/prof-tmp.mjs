import * as tf from '@tensorflow/tfjs-core';
import { ArrayBatchSource, DEFAULT_TRAIN_CONFIG, Network, Rng, Trainer, buildModel, selectBackend } from '@ferry/core';
await selectBackend(process.argv[2] ?? 'wasm');
const size = 112, batch = 16, classes = 20;
const net = Network.create(buildModel('resnet18', classes), { seed: 0 });
const rng = Rng.fromSeed(1);
const x = Float32Array.from({ length: batch * size * size * 3 }, () => rng.normal());
const labels = Int32Array.from({ length: batch }, (_, i) => i % classes);
const src = new ArrayBatchSource(x, labels, size, size, classes, { batchSize: batch, shuffle: false });
const tr = new Trainer({ network: net, config: DEFAULT_TRAIN_CONFIG, train: src, val: src });
tr.trainStep({ x, shape: [batch, size, size, 3], labels }, 0.001);
const prof = await tf.profile(() => { tr.trainStep({ x, shape: [batch, size, size, 3], labels }, 0.001); });
const agg = new Map();
for (const k of prof.kernels) { const a = agg.get(k.name) ?? { n: 0, ms: 0 }; a.n++; a.ms += k.kernelTimeMs; agg.set(k.name, a); }
const rows = [...agg].sort((a, b) => b[1].ms - a[1].ms);
let total = 0; for (const [, v] of rows) total += v.ms;
console.log('kernels', prof.kernels.length, 'total ms', total.toFixed(0));
for (const [k, v] of rows.slice(0, 25)) console.log(k.padEnd(30), String(v.n).padStart(5), v.ms.toFixed(1));
