import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { CheckpointError, type FerryError } from '../errors.js';
import type { ModelDef } from '../models/model.js';
import type { StateDict } from '../weights/host-tensor.js';
import { tfToTorch, torchToTf } from '../weights/layout.js';
import { readSafetensors, writeSafetensors } from '../weights/safetensors.js';
import type { Network } from './network.js';
import type { EpochMetrics } from './result.js';
import type { Sgd } from './sgd.js';

import { CHECKPOINT_FORMAT } from '@ferry/common';

export { CHECKPOINT_FORMAT };

/** What a checkpoint records besides tensors; enough to resume exactly. */
export interface CheckpointMeta {
  readonly format: typeof CHECKPOINT_FORMAT;
  readonly arch: string;
  readonly numClasses: number;
  readonly strategy: string;
  /** Epochs completed; training resumes at this (0-based) epoch. */
  readonly epochsDone: number;
  /** Seed of every per-epoch random stream (shuffle, augmentation, dropout). */
  readonly seed: number;
  readonly history: readonly EpochMetrics[];
  readonly bestValAccuracy: number;
  readonly bestEpoch: number;
  /** Per val image (in the val source's order), the class predicted at the best epoch, and its label. */
  readonly bestPredictions?: readonly number[];
  readonly valLabels?: readonly number[];
  /** Hash of the run's resolved configuration; a checkpoint of another run is refused. */
  readonly configHash: string;
}

/**
 * A ferry checkpoint is a .safetensors file: the model's state_dict in torch layout (so torch and
 * `ferry predict --weights` read it as weights), the SGD momentum buffers as
 * `optimizer.momentum.<name>`, and the JSON metadata under `__metadata__.ferry`.
 */
export async function saveCheckpoint(file: string, network: Network, sgd: Sgd, meta: CheckpointMeta): Promise<void> {
  const tensors: StateDict = await network.exportState();
  const specs = new Map(network.model.params.map((p) => [p.name, p]));
  for (const [name, data] of await sgd.momentumArrays()) {
    const spec = specs.get(name)!;
    tensors.set(`optimizer.momentum.${name}`, {
      dtype: 'float32',
      shape: spec.torchShape,
      data: tfToTorch(spec, data),
    });
  }
  await writeAtomic(file, writeSafetensors(tensors, { ferry: JSON.stringify(meta) }));
}

/** Writes the best-val weights (a plain state_dict in safetensors). */
export async function saveWeights(file: string, state: StateDict, meta: Record<string, string> = {}): Promise<void> {
  await writeAtomic(file, writeSafetensors(state, meta));
}

async function writeAtomic(file: string, bytes: Buffer): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, bytes);
  await rename(tmp, file);
}

export interface LoadedCheckpoint {
  readonly meta: CheckpointMeta;
  readonly model: StateDict;
  readonly momentum: StateDict;
}

export async function readCheckpoint(file: string): Promise<LoadedCheckpoint> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new CheckpointError(`cannot read checkpoint ${file}: ${(e as Error).message}`, { cause: e });
  }
  let st;
  try {
    st = readSafetensors(bytes, file);
  } catch (e) {
    throw new CheckpointError(`checkpoint ${file} is unreadable: ${(e as FerryError).message}`, { cause: e });
  }
  const raw = st.metadata['ferry'];
  if (raw === undefined) throw new CheckpointError(`${file} is a weights file, not a ferry checkpoint (no metadata)`);
  const meta = JSON.parse(raw) as CheckpointMeta;
  if (meta.format !== CHECKPOINT_FORMAT)
    throw new CheckpointError(`${file}: unknown checkpoint format ${String(meta.format)}`);
  const model: StateDict = new Map();
  const momentum: StateDict = new Map();
  for (const [k, v] of st.tensors) {
    if (k.startsWith('optimizer.momentum.')) momentum.set(k.slice('optimizer.momentum.'.length), v);
    else model.set(k, v);
  }
  return { meta, model, momentum };
}

/** Momentum buffers in TF layout, ready for Sgd.load. */
export function momentumTensors(model: ModelDef, momentum: StateDict): Map<string, tf.Tensor> {
  const specs = new Map(model.params.map((p) => [p.name, p]));
  const out = new Map<string, tf.Tensor>();
  for (const [name, t] of momentum) {
    const spec = specs.get(name);
    if (!spec) throw new CheckpointError(`checkpoint has momentum for unknown tensor ${name}`);
    out.set(name, tf.tensor(torchToTf(spec, t.data), [...spec.shape]));
  }
  return out;
}
