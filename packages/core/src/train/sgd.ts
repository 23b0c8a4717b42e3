import * as tf from '@tensorflow/tfjs-core';
import { fusedWebGpuActive, sgdMomentumFlatStep, sgdMomentumStep } from '../backends/fused.js';

export interface SgdOptions {
  readonly momentum: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
}

/** Every momentum buffer end to end in one tensor (the fused WebGPU step). */
interface FlatBuffers {
  readonly names: readonly string[];
  readonly sizes: readonly number[];
  readonly buf: tf.Variable;
}

/**
 * torch.optim.SGD (dampening 0): g += wd * p; buf = first ? g : mu * buf + g;
 * p -= lr * (nesterov ? g + mu * buf : buf). Buffers are kept per parameter name, or, where the
 * backend fuses the step (webgpu), end to end in one flat tensor; `momentumArrays` reads either.
 */
export class Sgd {
  private readonly buffers = new Map<string, tf.Variable>();
  private flat: FlatBuffers | undefined;

  constructor(readonly options: SgdOptions) {}

  /** Applies one step. `grads` and `params` are keyed by the same (torchvision) names. */
  step(params: ReadonlyMap<string, tf.Variable>, grads: ReadonlyMap<string, tf.Tensor>, lr: number): void {
    const { momentum, weightDecay, nesterov } = this.options;
    if (momentum !== 0 && fusedWebGpuActive()) {
      this.stepFlat(params, grads, lr);
      return;
    }
    this.unflatten();
    tf.tidy(() => {
      for (const [name, g] of grads) {
        const p = params.get(name);
        if (!p) continue;
        if (momentum === 0) {
          const gd = weightDecay !== 0 ? tf.add(g, tf.mul(p, weightDecay)) : g;
          p.assign(tf.sub(p, tf.mul(gd, lr)));
          continue;
        }
        // A zero buffer makes the first step torch's buf = g exactly (mu * 0 + g).
        let buf = this.buffers.get(name);
        if (!buf) {
          buf = tf.variable(tf.zerosLike(p), false);
          this.buffers.set(name, buf);
        }
        const [nextBuf, nextP] = sgdMomentumStep(p, buf, g, lr, momentum, weightDecay, nesterov);
        buf.assign(nextBuf);
        p.assign(nextP);
      }
    });
  }

  /** The fused step: one flat buffer for all parameters (same arithmetic as `step`). */
  private stepFlat(params: ReadonlyMap<string, tf.Variable>, grads: ReadonlyMap<string, tf.Tensor>, lr: number): void {
    const { momentum, weightDecay, nesterov } = this.options;
    const names = [...grads.keys()].filter((n) => params.has(n));
    if (names.length === 0) return;
    const same =
      this.flat !== undefined &&
      this.flat.names.length === names.length &&
      this.flat.names.every((n, i) => n === names[i]);
    if (!same) {
      // First step, or another parameter set: gather the buffers there are (zeros elsewhere).
      this.unflatten();
      const sizes = names.map((n) => params.get(n)!.size);
      const parts = tf.tidy(() =>
        tf.concat(
          names.map((n, i) => {
            const b = this.buffers.get(n);
            return b ? tf.reshape(b, [-1]) : tf.zeros([sizes[i]!]);
          }),
        ),
      );
      this.dispose();
      this.flat = { names, sizes, buf: tf.variable(parts, false) };
      parts.dispose();
    }
    const flat = this.flat!;
    tf.tidy(() => {
      const r = sgdMomentumFlatStep(
        names.map((n) => params.get(n)!),
        names.map((n) => grads.get(n)!),
        flat.buf as tf.Tensor1D,
        lr,
        momentum,
        weightDecay,
        nesterov,
      );
      flat.buf.assign(r.buf);
      names.forEach((n, i) => params.get(n)!.assign(r.params[i]!));
    });
  }

  /** [name, offset, size] of each parameter's segment of the flat buffer. */
  private *segments(flat: FlatBuffers): Generator<[string, number, number]> {
    let offset = 0;
    for (let i = 0; i < flat.names.length; i++) {
      yield [flat.names[i]!, offset, flat.sizes[i]!];
      offset += flat.sizes[i]!;
    }
  }

  /** Back to per-parameter buffers (the backend changed, or no fused step). */
  private unflatten(): void {
    const flat = this.flat;
    if (!flat) return;
    for (const [n, offset, size] of this.segments(flat)) {
      this.buffers.set(
        n,
        tf.variable(
          tf.tidy(() => tf.slice(flat.buf, [offset], [size])),
          false,
        ),
      );
    }
    flat.buf.dispose();
    this.flat = undefined;
  }

  /** The momentum buffers by parameter name, flat, in TF layout (for checkpoints). */
  async momentumArrays(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    if (this.flat) {
      const all = (await this.flat.buf.data()) as Float32Array;
      for (const [n, offset, size] of this.segments(this.flat)) out.set(n, all.slice(offset, offset + size));
    }
    for (const [n, v] of this.buffers) out.set(n, (await v.data()) as Float32Array);
    return out;
  }

  /** Replaces the momentum buffers (resume). */
  load(buffers: ReadonlyMap<string, tf.Tensor>): void {
    this.dispose();
    for (const [k, v] of buffers) this.buffers.set(k, tf.variable(v, false));
  }

  dispose(): void {
    for (const v of this.buffers.values()) v.dispose();
    this.buffers.clear();
    this.flat?.buf.dispose();
    this.flat = undefined;
  }
}
