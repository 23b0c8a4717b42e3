import * as tf from '@tensorflow/tfjs-core';
import type { Rng } from '../util/rng.js';

/** How a parameter's torch layout maps to ferry's TF.js layout. */
export type ParamKind = 'conv' | 'depthwise' | 'linear' | 'bias' | 'bn_weight' | 'bn_bias' | 'bn_mean' | 'bn_var';

/** One tensor of a model's state, named exactly as in torchvision's state_dict. */
export interface ParamSpec {
  readonly name: string;
  readonly kind: ParamKind;
  /** Shape in torch layout (OIHW for conv, [out, in] for linear). */
  readonly torchShape: readonly number[];
  /** Shape in TF.js layout (HWIO, [kh, kw, c, 1] for depthwise, [in, out] for linear). */
  readonly shape: readonly number[];
  /** Learned by gradient descent (BatchNorm running statistics are not). */
  readonly learnable: boolean;
  /** torchvision's initialisation, used when no weights are loaded. */
  readonly init: ParamInit;
}

export type ParamInit =
  | { readonly type: 'zeros' }
  | { readonly type: 'ones' }
  | { readonly type: 'normal'; readonly std: number }
  | { readonly type: 'uniform'; readonly bound: number };

/** The tensors a forward pass reads, by torchvision name. */
export type ParamLookup = ReadonlyMap<string, tf.Tensor>;

/** Batch statistics a BatchNorm layer saw in training mode, for the running-stat update. */
export interface BnBatchStats {
  readonly name: string;
  readonly mean: tf.Tensor1D;
  /** Biased batch variance (what normalisation uses); the update applies n/(n-1). */
  readonly variance: tf.Tensor1D;
  readonly count: number;
}

export interface ForwardContext {
  readonly params: ParamLookup;
  /** BatchNorm uses batch statistics and dropout is active. */
  readonly training: boolean;
  /** Where BatchNorm layers in training mode leave their (kept) batch statistics. */
  readonly bnStats?: BnBatchStats[];
  readonly rng?: Rng;
}

export type Layer = (ctx: ForwardContext, x: tf.Tensor4D) => tf.Tensor4D;

export const BN_EPS = 1e-5;
/** torch BatchNorm momentum (Keras momentum 0.9). */
export const BN_MOMENTUM = 0.1;

function get(ctx: ForwardContext, name: string): tf.Tensor {
  const t = ctx.params.get(name);
  if (t === undefined) throw new Error(`parameter ${name} is not loaded`);
  return t;
}

/** Collects parameter specs while a model's layers are declared, so each layer is written once. */
export class SpecBuilder {
  readonly specs: ParamSpec[] = [];

  private add(spec: ParamSpec): void {
    this.specs.push(spec);
  }

  /** Conv2d without bias, torch padding `pad` on every side (not TF 'same'). */
  conv(name: string, cin: number, cout: number, k: number, stride: number, pad: number, groups = 1): Layer {
    const depthwise = groups !== 1;
    if (depthwise && (groups !== cin || cin !== cout)) throw new Error(`${name}: only depthwise grouping is supported`);
    // torch's fan_out is weight.size(0) * k * k, also for depthwise weights.
    const fanOut = cout * k * k;
    this.add({
      name: `${name}.weight`,
      kind: depthwise ? 'depthwise' : 'conv',
      torchShape: [cout, cin / groups, k, k],
      shape: depthwise ? [k, k, cin, 1] : [k, k, cin, cout],
      learnable: true,
      init: { type: 'normal', std: Math.sqrt(2 / fanOut) },
    });
    const key = `${name}.weight`;
    if (depthwise) {
      return (ctx, x) => tf.depthwiseConv2d(x, get(ctx, key) as tf.Tensor4D, stride, pad);
    }
    return (ctx, x) => tf.conv2d(x, get(ctx, key) as tf.Tensor4D, stride, pad);
  }

  /** BatchNorm2d with torch semantics (eps 1e-5, momentum 0.1, unbiased running variance). */
  bn(name: string, c: number): Layer {
    const names = {
      weight: `${name}.weight`,
      bias: `${name}.bias`,
      mean: `${name}.running_mean`,
      var: `${name}.running_var`,
    };
    this.add({ name: names.weight, kind: 'bn_weight', torchShape: [c], shape: [c], learnable: true, init: { type: 'ones' } });
    this.add({ name: names.bias, kind: 'bn_bias', torchShape: [c], shape: [c], learnable: true, init: { type: 'zeros' } });
    this.add({ name: names.mean, kind: 'bn_mean', torchShape: [c], shape: [c], learnable: false, init: { type: 'zeros' } });
    this.add({ name: names.var, kind: 'bn_var', torchShape: [c], shape: [c], learnable: false, init: { type: 'ones' } });
    return (ctx, x) => {
      const gamma = get(ctx, names.weight) as tf.Tensor1D;
      const beta = get(ctx, names.bias) as tf.Tensor1D;
      if (!ctx.training) {
        return tf.batchNorm(x, get(ctx, names.mean) as tf.Tensor1D, get(ctx, names.var) as tf.Tensor1D, beta, gamma, BN_EPS);
      }
      return batchNormTrain(x, gamma, beta, (mean, variance) => {
        if (!ctx.bnStats) return;
        const [n, h, w] = x.shape;
        ctx.bnStats.push({ name, mean: tf.keep(mean), variance: tf.keep(variance), count: n * h * w });
      });
    };
  }

  /** Linear layer on [batch, in]; weight stored [in, out]. */
  linear(name: string, cin: number, cout: number, init: 'torch-default' | 'normal-0.01'): (ctx: ForwardContext, x: tf.Tensor2D) => tf.Tensor2D {
    const bound = 1 / Math.sqrt(cin);
    this.add({
      name: `${name}.weight`,
      kind: 'linear',
      torchShape: [cout, cin],
      shape: [cin, cout],
      learnable: true,
      init: init === 'torch-default' ? { type: 'uniform', bound } : { type: 'normal', std: 0.01 },
    });
    this.add({
      name: `${name}.bias`,
      kind: 'bias',
      torchShape: [cout],
      shape: [cout],
      learnable: true,
      init: init === 'torch-default' ? { type: 'uniform', bound } : { type: 'zeros' },
    });
    const w = `${name}.weight`;
    const b = `${name}.bias`;
    return (ctx, x) => tf.add(tf.matMul(x, get(ctx, w) as tf.Tensor2D), get(ctx, b)) as tf.Tensor2D;
  }
}

/**
 * BatchNorm with batch statistics and a hand-written gradient (one node on the tape instead of
 * the moments + normalisation graph, and no Tile): with xhat = (x - mean) / sqrt(var + eps),
 *   dbeta = sum(dy), dgamma = sum(dy * xhat),
 *   dx = gamma / sqrt(var + eps) * (dy - dbeta / n - xhat * dgamma / n).
 */
function batchNormTrain(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  onStats: (mean: tf.Tensor1D, variance: tf.Tensor1D) => void,
): tf.Tensor4D {
  const [n, h, w] = x.shape;
  const count = n * h * w;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xs, g, b, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const { mean, variance } = tf.moments(xs, [0, 1, 2]);
    onStats(mean as tf.Tensor1D, variance as tf.Tensor1D);
    const invStd = tf.rsqrt(tf.add(variance, BN_EPS));
    const xhat = tf.mul(tf.sub(xs, mean), invStd);
    save([xhat, invStd, g]);
    return {
      value: tf.add(tf.mul(xhat, g), b),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sxhat, sinv, sg] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
        const dbeta = tf.sum(dy, [0, 1, 2]);
        const dgamma = tf.sum(tf.mul(dy, sxhat), [0, 1, 2]);
        const centred = tf.sub(tf.sub(dy, tf.div(dbeta, count)), tf.mul(sxhat, tf.div(dgamma, count)));
        return [tf.mul(centred, tf.mul(sg, sinv)), dgamma, dbeta];
      },
    };
  });
  return f(x, gamma, beta) as tf.Tensor4D;
}

/** Inverted dropout with a seeded mask; identity outside training. */
export function dropout(ctx: ForwardContext, x: tf.Tensor2D, rate: number): tf.Tensor2D {
  if (!ctx.training || rate === 0) return x;
  const seed = ctx.rng ? ctx.rng.nextUint32() : 0;
  const keep = tf.greaterEqual(tf.randomUniform(x.shape, 0, 1, 'float32', seed), rate);
  return tf.mul(x, tf.mul(tf.cast(keep, 'float32'), 1 / (1 - rate))) as tf.Tensor2D;
}

export function relu(x: tf.Tensor4D): tf.Tensor4D {
  return tf.relu(x);
}

export function relu6(x: tf.Tensor4D): tf.Tensor4D {
  return tf.relu6(x);
}

/** torch MaxPool2d(3, 2, padding=1): padded positions never win. */
export function maxPool3s2(x: tf.Tensor4D): tf.Tensor4D {
  return tf.maxPool(x, 3, 2, 1);
}

/** AdaptiveAvgPool2d(1) + flatten. */
export function globalAvgPool(x: tf.Tensor4D): tf.Tensor2D {
  return tf.mean(x, [1, 2]) as tf.Tensor2D;
}
