// Shared by the engine benchmarks: the synthetic training set-up, and running one case in its own
// process. (Bundled into .gpu/ by bench/gpu/prepare.sh like the scripts that import it.)
import { execFileSync } from 'node:child_process';
import { ArrayBatchSource, DEFAULT_TRAIN_CONFIG, Network, Rng, Trainer, buildModel } from '@ferry/core';

/** A network, a fixed random batch and a trainer over it (seeded: every run sees the same data). */
export function trainingSetup({ model: arch, classes, size, batch, strategy = { kind: 'finetune' }, microBatch }) {
  const model = buildModel(arch, classes);
  const net = Network.create(model, { seed: 0 });
  const rng = Rng.fromSeed(1);
  const x = Float32Array.from({ length: batch * size * size * 3 }, () => rng.normal());
  const labels = Int32Array.from({ length: batch }, (_, i) => i % classes);
  const shape = [batch, size, size, 3];
  const source = new ArrayBatchSource(x, labels, [size, size, 3], classes, { batchSize: batch, shuffle: false });
  const trainer = new Trainer({
    network: net,
    config: { ...DEFAULT_TRAIN_CONFIG, strategy },
    train: source,
    val: source,
    microBatch,
  });
  return { net, x, labels, shape, trainer };
}

/** Runs a command that prints JSON lines; its last line, or { error } with the end of its stderr. */
export function runJson(cmd, args, timeoutMs = 0) {
  try {
    const out = execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 1 << 24,
      timeout: timeoutMs,
    });
    return JSON.parse(out.trim().split('\n').at(-1));
  } catch (e) {
    return {
      error: String(e.stderr ?? e.message)
        .split('\n')
        .filter((l) => l && !l.startsWith('Warning: max'))
        .slice(-3)
        .join(' | '),
    };
  }
}
