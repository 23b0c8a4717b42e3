import * as tf from '@tensorflow/tfjs-core';

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
      for (const [name, g0] of grads) {
        const p = params.get(name);
        if (!p) continue;
        let g = weightDecay !== 0 ? tf.add(g0, tf.mul(p, weightDecay)) : g0;
        if (momentum !== 0) {
          const buf = this.buffers.get(name);
          let next: tf.Tensor;
          if (buf) {
            next = tf.add(tf.mul(buf, momentum), g);
            buf.assign(next);
          } else {
            next = g;
            this.buffers.set(name, tf.variable(tf.clone(g), false));
          }
          g = nesterov ? tf.add(g, tf.mul(next, momentum)) : next;
        }
        p.assign(tf.sub(p, tf.mul(g, lr)));
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
