import * as tf from '@tensorflow/tfjs-core';
import { addAndActivate, batchNormInfer, batchNormTrain, type Activation, type BnStats } from '../backends/fused.js';
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
  /** Mean and biased variance (what normalisation uses; the update applies n/(n-1)). */
  readonly stats: BnStats;
  readonly count: number;
}

/** Mean and biased variance per channel of a BatchNorm layer's input over one batch (kept tensors). */
export interface BnInputMoments {
  readonly name: string;
  readonly mean: tf.Tensor1D;
  readonly variance: tf.Tensor1D;
  /** Values per channel the moments are over (batch x height x width). */
  readonly count: number;
}

export interface ForwardContext {
  readonly params: ParamLookup;
  /** BatchNorm uses batch statistics and dropout is active. */
  readonly training: boolean;
  /** Where BatchNorm layers in training mode leave their (kept) batch statistics. */
  readonly bnStats?: BnBatchStats[];
  /**
   * Inference mode: where BatchNorm layers leave the moments of their input (kept tensors), so the
   * statistics a dataset brings can be compared with the running ones (the advisor's domain shift).
   */
  readonly bnInputs?: BnInputMoments[];
  readonly rng?: Rng;
}

export type Layer = (ctx: ForwardContext, x: tf.Tensor4D) => tf.Tensor4D;

/** A BatchNorm with its activation and an optional residual added before it. */
export type BnLayer = (ctx: ForwardContext, x: tf.Tensor4D, residual?: tf.Tensor4D) => tf.Tensor4D;

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
    const layer = this.bnAct(name, c, 'none');
    return (ctx, x) => layer(ctx, x);
  }

  /**
   * act(BatchNorm2d(x) + residual): the BatchNorm, then the residual add and the activation that
   * follow it in the model, as one fused operation where the backend has one (webgpu).
   */
  bnAct(name: string, c: number, act: Activation): BnLayer {
    const names = {
      weight: `${name}.weight`,
      bias: `${name}.bias`,
      mean: `${name}.running_mean`,
      var: `${name}.running_var`,
    };
    this.add({
      name: names.weight,
      kind: 'bn_weight',
      torchShape: [c],
      shape: [c],
      learnable: true,
      init: { type: 'ones' },
    });
    this.add({
      name: names.bias,
      kind: 'bn_bias',
      torchShape: [c],
      shape: [c],
      learnable: true,
      init: { type: 'zeros' },
    });
    this.add({
      name: names.mean,
      kind: 'bn_mean',
      torchShape: [c],
      shape: [c],
      learnable: false,
      init: { type: 'zeros' },
    });
    this.add({
      name: names.var,
      kind: 'bn_var',
      torchShape: [c],
      shape: [c],
      learnable: false,
      init: { type: 'ones' },
    });
    return (ctx, x, residual) => {
      const gamma = get(ctx, names.weight) as tf.Tensor1D;
      const beta = get(ctx, names.bias) as tf.Tensor1D;
      if (!ctx.training) {
        if (ctx.bnInputs) {
          const m = tf.moments(x, [0, 1, 2]);
          const [n, h, w] = x.shape;
          ctx.bnInputs.push({
            name,
            mean: tf.keep(m.mean as tf.Tensor1D),
            variance: tf.keep(m.variance as tf.Tensor1D),
            count: n * h * w,
          });
        }
        const running = { mean: get(ctx, names.mean) as tf.Tensor1D, variance: get(ctx, names.var) as tf.Tensor1D };
        return batchNormInfer(x, running, gamma, beta, BN_EPS, act, residual);
      }
      const collect = ctx.bnStats;
      const [n, h, w] = x.shape;
      return batchNormTrain(
        x,
        gamma,
        beta,
        BN_EPS,
        act,
        residual,
        collect ? (stats) => collect.push({ name, stats, count: n * h * w }) : undefined,
      );
    };
  }

  /** Linear layer on [batch, in]; weight stored [in, out]. */
  linear(
    name: string,
    cin: number,
    cout: number,
    init: 'torch-default' | 'normal-0.01',
  ): (ctx: ForwardContext, x: tf.Tensor2D) => tf.Tensor2D {
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

/** Inverted dropout with a seeded mask; identity outside training. */
export function dropout(ctx: ForwardContext, x: tf.Tensor2D, rate: number): tf.Tensor2D {
  if (!ctx.training || rate === 0) return x;
  const seed = ctx.rng ? ctx.rng.nextUint32() : 0;
  const keep = tf.greaterEqual(tf.randomUniform(x.shape, 0, 1, 'float32', seed), rate);
  return tf.mul(x, tf.mul(tf.cast(keep, 'float32'), 1 / (1 - rate))) as tf.Tensor2D;
}

/**
 * Applies `fs` in turn, each in its own scope: what one makes besides its output is freed when it
 * returns, and each intermediate output once the next has run (not when the whole forward has),
 * so the blocks of one size that a forward frees are there for the next of that size. Under a
 * gradient tape this is safe too: what a backward needs is saved apart.
 */
export function sequence<T extends tf.Tensor>(x: T, fs: readonly ((h: T) => T)[]): T {
  let h = x;
  for (const f of fs) {
    const input = h;
    h = tf.tidy(() => f(input));
    if (input !== x && input !== h) input.dispose();
  }
  return h;
}

export function relu(x: tf.Tensor4D): tf.Tensor4D {
  return addAndActivate(x, undefined, 'relu');
}

/** torch MaxPool2d(3, 2, padding=1): padded positions never win. */
export function maxPool3s2(x: tf.Tensor4D): tf.Tensor4D {
  return tf.maxPool(x, 3, 2, 1);
}

/** AdaptiveAvgPool2d(1) + flatten. */
export function globalAvgPool(x: tf.Tensor4D): tf.Tensor2D {
  return tf.mean(x, [1, 2]) as tf.Tensor2D;
}
