import * as tf from '@tensorflow/tfjs-core';
import { sgdMomentumStep } from '../backends/fused.js';

export interface SgdOptions {
  readonly momentum: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
}

/**
 * torch.optim.SGD (dampening 0): g += wd * p; buf = first ? g : mu * buf + g;
 * p -= lr * (nesterov ? g + mu * buf : buf). Buffers are kept per parameter name.
 */
export class Sgd {
  readonly buffers = new Map<string, tf.Variable>();

  constructor(readonly options: SgdOptions) {}

  /** Applies one step. `grads` and `params` are keyed by the same (torchvision) names. */
  step(params: ReadonlyMap<string, tf.Variable>, grads: ReadonlyMap<string, tf.Tensor>, lr: number): void {
    const { momentum, weightDecay, nesterov } = this.options;
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

  /** Replaces the momentum buffers (resume). */
  load(buffers: ReadonlyMap<string, tf.Tensor>): void {
    this.dispose();
    for (const [k, v] of buffers) this.buffers.set(k, tf.variable(v, false));
  }

  dispose(): void {
    for (const v of this.buffers.values()) v.dispose();
    this.buffers.clear();
  }
}
