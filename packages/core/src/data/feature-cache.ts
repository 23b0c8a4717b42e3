import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { BatchSource } from '../train/data.js';
import type { Network } from '../train/network.js';
import type { Sample } from './folder.js';
import type { TransformSpec } from './transforms.js';

/** Features of one split and view: [count, dim] float32 plus labels, in sample order. */
export interface FeatureView {
  readonly features: Float32Array;
  readonly labels: Int32Array;
  readonly dim: number;
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Hash of the images' contents (not names or times): what the cached features depend on. */
export async function contentHash(samples: readonly Sample[]): Promise<string> {
  const h = createHash('sha256');
  for (const s of samples) h.update(`${s.label}:${await sha256File(s.file)}\n`);
  return h.digest('hex');
}

export interface FeatureKey {
  readonly arch: string;
  /** SHA-256 of the weights file, or `random:<seed>` for an initialised network. */
  readonly weights: string;
  /** Stage index the features are taken before (the first trained stage). */
  readonly stage: number;
  readonly spec: TransformSpec;
  readonly seed: number;
  readonly view: number;
  readonly images: string;
  /** SHA-256 of the frozen stages' BatchNorm running statistics the features were computed with. */
  readonly batchNorm: string;
}

/**
 * The key of frozen features, as every writer and reader builds it (a probe cell, `ferry advise`):
 * the fields in one order, and the seed left out (0) for the val transform, which draws nothing at
 * random, so cells of any seed share its features.
 */
export function frozenFeatureKey(key: FeatureKey): FeatureKey {
  // One field order (the hash is of the JSON text), whatever order the caller built it in.
  return {
    arch: key.arch,
    weights: key.weights,
    stage: key.stage,
    spec: key.spec,
    seed: key.spec.kind === 'val' ? 0 : key.seed,
    view: key.view,
    images: key.images,
    batchNorm: key.batchNorm,
  };
}

export function featureKeyHash(key: FeatureKey): string {
  return createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 24);
}

/**
 * Backbone features computed once and kept on disk. A view is one pass over the split with the
 * augmentation of "epoch" `view` (view 0 of a val transform is the plain val image), so K cached
 * views of a train split are K fixed augmentations of every image.
 */
export class FeatureCache {
  constructor(private readonly dir: string) {}

  private paths(key: FeatureKey): { bin: string; meta: string } {
    const base = path.join(this.dir, featureKeyHash(key));
    return { bin: `${base}.f32`, meta: `${base}.json` };
  }

  async get(key: FeatureKey): Promise<FeatureView | undefined> {
    const p = this.paths(key);
    try {
      const meta = JSON.parse(await readFile(p.meta, 'utf8')) as { count: number; dim: number; labels: number[] };
      const bytes = await readFile(p.bin);
      if (bytes.length !== meta.count * meta.dim * 4) return undefined;
      const features = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
      return { features, labels: Int32Array.from(meta.labels), dim: meta.dim };
    } catch {
      return undefined;
    }
  }

  async put(key: FeatureKey, view: FeatureView): Promise<void> {
    const p = this.paths(key);
    await mkdir(this.dir, { recursive: true });
    await writeFile(
      `${p.bin}.tmp`,
      Buffer.from(view.features.buffer, view.features.byteOffset, view.features.byteLength),
    );
    await rename(`${p.bin}.tmp`, p.bin);
    const meta = { count: view.labels.length, dim: view.dim, labels: [...view.labels], key };
    await writeFile(`${p.meta}.tmp`, JSON.stringify(meta));
    await rename(`${p.meta}.tmp`, p.meta);
  }

  /** A small JSON document kept beside the features (adapted BatchNorm statistics), by key. */
  async getJson<T>(key: object): Promise<T | undefined> {
    try {
      return (JSON.parse(await readFile(this.jsonPath(key), 'utf8')) as { value: T }).value;
    } catch {
      return undefined;
    }
  }

  async putJson(key: object, value: unknown): Promise<void> {
    const file = this.jsonPath(key);
    await mkdir(this.dir, { recursive: true });
    await writeFile(`${file}.tmp`, JSON.stringify({ key, value }));
    await rename(`${file}.tmp`, file);
  }

  private jsonPath(key: object): string {
    return path.join(
      this.dir,
      `${createHash('sha256').update(JSON.stringify(key)).digest('hex').slice(0, 24)}.doc.json`,
    );
  }

  /** The cached view, or computes it by running `network` stages [0, stage) in inference mode. */
  async getOrCompute(
    key: FeatureKey,
    network: Network,
    source: BatchSource,
    onBatch?: (done: number) => void,
  ): Promise<FeatureView & { cached: boolean }> {
    const hit = await this.get(key);
    if (hit) return { ...hit, cached: true };
    const view = await computeFeatures(network, key.stage, source, key.view, key.seed, onBatch);
    await this.put(key, view);
    return { ...view, cached: false };
  }
}

/** Runs the frozen stages over every batch of `source` (unshuffled) and collects the features. */
export async function computeFeatures(
  network: Network,
  stage: number,
  source: BatchSource,
  epoch: number,
  seed: number,
  onBatch?: (done: number) => void,
): Promise<FeatureView> {
  const parts: Float32Array[] = [];
  const labels: number[] = [];
  let dim = 0;
  for await (const batch of source.batches(epoch, seed)) {
    const f = tf.tidy(() => network.runStages(tf.tensor(batch.x, [...batch.shape]), 0, stage, { training: false }));
    dim = f.shape.slice(1).reduce((a, b) => a * b, 1);
    parts.push((await f.data()) as Float32Array);
    f.dispose();
    labels.push(...batch.labels);
    onBatch?.(labels.length);
  }
  const features = new Float32Array(labels.length * dim);
  let o = 0;
  for (const p of parts) {
    features.set(p, o);
    o += p.length;
  }
  return { features, labels: Int32Array.from(labels), dim };
}
