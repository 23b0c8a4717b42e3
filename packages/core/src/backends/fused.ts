import {
  torchActivationGrad,
  torchActive,
  torchBatchNormInferAct,
  torchBatchNormTrain,
  torchBatchNormTrainGrad,
  torchSgdMomentum,
  torchSoftmaxCrossEntropy,
} from '@ferry/torch';
import * as tf from '@tensorflow/tfjs-core';
import * as gpu from './webgpu/ops.js';
import type { Activation } from './webgpu/programs.js';

export type { Activation } from './webgpu/programs.js';

/**
 * The engine's fused operations: BatchNorm in training mode (with its activation and an optional
 * residual add), the BatchNorm running-statistic update and the SGD momentum step. On webgpu each
 * is a few of ferry's own programs (backends/webgpu); elsewhere the same mathematics as
 * TensorFlow.js ops, which the wasm and cpu backends run as fast as a fused form would. Callers
 * (models/layers.ts, train/network.ts, train/sgd.ts) do not know which they get.
 */

/** Fusion is on for webgpu unless switched off (setWebGpuFastPath(false), FERRY_WEBGPU_FAST=0). */
let webgpuFusion = true;

export function setWebGpuFusion(on: boolean): void {
  webgpuFusion = on;
}

/** Whether ferry's fused WebGPU programs run now (the backend is webgpu and fusion is on). */
export function fusedWebGpuActive(): boolean {
  return webgpuFusion && tf.getBackend() === 'webgpu';
}

/**
 * A BatchNorm layer's batch statistics, kept for the running-statistic update: the mean and the
 * biased variance, as two tensors (ops) or packed as one [2, c] tensor (webgpu's programs).
 */
export type BnStats =
  | { readonly kind: 'pair'; readonly mean: tf.Tensor1D; readonly variance: tf.Tensor1D }
  | { readonly kind: 'packed'; readonly both: tf.Tensor2D };

export function disposeBnStats(s: BnStats): void {
  if (s.kind === 'pair') {
    s.mean.dispose();
    s.variance.dispose();
  } else s.both.dispose();
}

/**
 * act(y + residual) as TensorFlow.js ops: what follows a BatchNorm in the models. The sum it
 * makes is freed once activated (a backward that needs it holds its own reference), so a layer
 * does not keep it until its scope ends.
 */
export function addAndActivate(y: tf.Tensor4D, residual: tf.Tensor4D | undefined, act: Activation): tf.Tensor4D {
  const summed: tf.Tensor4D = residual ? addSaving(y, residual) : y;
  if (act === 'none') return summed;
  const out = activateKeepingOutput(summed, act);
  if (summed !== y) summed.dispose();
  return out;
}

/**
 * act(BatchNorm(x) [+ residual]) with running statistics (inference): one libtorch call on the
 * torch backend (add and activation in place), elsewhere TensorFlow.js's batchNorm and the ops
 * above, the normalised tensor freed once used. Never under a gradient tape (frozen stages and
 * evaluation run outside it).
 */
export function batchNormInfer(
  x: tf.Tensor4D,
  stats: { readonly mean: tf.Tensor1D; readonly variance: tf.Tensor1D },
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
  act: Activation,
  residual: tf.Tensor4D | undefined,
): tf.Tensor4D {
  if (torchActive()) return torchBatchNormInferAct(x, stats.mean, stats.variance, gamma, beta, eps, residual, act);
  const y = tf.batchNorm(x, stats.mean, stats.variance, beta, gamma, eps);
  const out = addAndActivate(y, residual, act);
  if (out !== y) y.dispose();
  return out;
}

/**
 * y + residual of one shape, whose backward (dy to both) keeps nothing: TensorFlow.js's Add keeps
 * both inputs for a broadcast its gradient may have to undo, which would hold two activations per
 * residual block until the backward.
 */
function addSaving(y: tf.Tensor4D, residual: tf.Tensor4D): tf.Tensor4D {
  if (!tf.util.arraysEqual(y.shape, residual.shape)) return tf.add(y, residual);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [a, b] = args as [tf.Tensor4D, tf.Tensor4D];
    return { value: tf.add(a, b), gradFunc: (dy: tf.Tensor) => [dy.clone(), dy.clone()] };
  });
  return f(y, residual) as tf.Tensor4D;
}

/**
 * ReLU / ReLU6 whose backward reads the output (which the next layer keeps for its own backward
 * anyway) instead of the input, so the pre-activation tensor is freed after the forward, as
 * PyTorch's in-place ReLU frees it: one activation less held per layer in training. The mask is
 * PyTorch's (threshold_backward: y > 0; hardtanh_backward: 0 < y < 6), which for ReLU is
 * TensorFlow.js's own too.
 */
function activateKeepingOutput(x: tf.Tensor4D, act: 'relu' | 'relu6'): tf.Tensor4D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [t, save] = args as [tf.Tensor4D, tf.GradSaveFunc];
    const y = act === 'relu' ? tf.relu(t) : tf.relu6(t);
    save([y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const out = saved[0]!;
        if (torchActive()) return [torchActivationGrad(dy, out, act)];
        const mask =
          act === 'relu' ? tf.step(out) : tf.cast(tf.logicalAnd(tf.greater(out, 0), tf.less(out, 6)), 'float32');
        return [tf.mul(dy, mask)];
      },
    };
  });
  return f(x) as tf.Tensor4D;
}

/**
 * act(BatchNorm(x) [+ residual]) with batch statistics, plus those statistics ([mean; biased
 * variance], kept tensors the collector then owns) for the running-statistic update. One node on the gradient
 * tape for the normalisation: with xhat = (x - mean) / sqrt(var + eps) and dz the gradient at the
 * normalised output, dbeta = sum(dz), dgamma = sum(dz * xhat),
 * dx = gamma / sqrt(var + eps) * (dz - dbeta / n - xhat * dgamma / n).
 */
export function batchNormTrain(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
  act: Activation,
  residual: tf.Tensor4D | undefined,
  onStats?: (stats: BnStats) => void,
): tf.Tensor4D {
  if (fusedWebGpuActive()) return batchNormTrainWebGpu(x, gamma, beta, eps, act, residual, onStats);
  if (torchActive()) return addAndActivate(batchNormTrainTorch(x, gamma, beta, eps, onStats), residual, act);
  const [n, h, w] = x.shape;
  const count = n * h * w;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xs, g, b, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const { mean, variance } = tf.moments(xs, [0, 1, 2]);
    const invStd = tf.rsqrt(tf.add(variance, eps));
    const xhat = tf.mul(tf.sub(xs, mean), invStd);
    save([xhat, invStd, g]);
    onStats?.({ kind: 'pair', mean: tf.keep(mean as tf.Tensor1D), variance: tf.keep(variance as tf.Tensor1D) });
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
  return addAndActivate(f(x, gamma, beta) as tf.Tensor4D, residual, act);
}

/** libtorch's BatchNorm forward and its fused backward (native_batch_norm_backward) as one tape node. */
function batchNormTrainTorch(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
  onStats?: (stats: BnStats) => void,
): tf.Tensor4D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xs, g, b, save] = args as [tf.Tensor4D, tf.Tensor1D, tf.Tensor1D, tf.GradSaveFunc];
    const r = torchBatchNormTrain(xs, g, b, eps);
    save([xs, g, r.mean, r.invstd]);
    if (onStats) onStats({ kind: 'pair', mean: tf.keep(r.mean), variance: tf.keep(r.variance) });
    return {
      value: r.y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sg, mean, invstd] = saved as [tf.Tensor4D, tf.Tensor1D, tf.Tensor1D, tf.Tensor1D];
        return torchBatchNormTrainGrad(dy as tf.Tensor4D, sx, sg, { mean, invstd }, eps);
      },
    };
  });
  return f(x, gamma, beta) as tf.Tensor4D;
}

/**
 * Mean softmax cross-entropy (torch.nn.CrossEntropyLoss) of logits against integer labels. On
 * the torch backend libtorch's fused log_softmax + nll_loss and their backward, one tape node;
 * elsewhere TensorFlow.js's logSoftmax and ops.
 */
export function softmaxCrossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D, numClasses: number): tf.Scalar {
  if (torchActive()) {
    const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [l, save] = args as [tf.Tensor2D, tf.GradSaveFunc];
      const [loss, dlogits] = torchSoftmaxCrossEntropy(l, labels);
      save([dlogits]);
      return { value: loss, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [tf.mul(saved[0]!, dy)] };
    });
    return f(logits) as tf.Scalar;
  }
  return tf.tidy(() => {
    const oneHot = tf.cast(tf.oneHot(labels, numClasses), 'float32');
    return tf.neg(tf.mean(tf.sum(tf.mul(oneHot, tf.logSoftmax(logits)), 1))) as tf.Scalar;
  });
}

function batchNormTrainWebGpu(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
  act: Activation,
  residual: tf.Tensor4D | undefined,
  onStats?: (stats: BnStats) => void,
): tf.Tensor4D {
  const body = (...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [xs, g, b, res] = args.slice(0, -1) as [tf.Tensor4D, tf.Tensor1D, tf.Tensor1D, tf.Tensor4D | undefined];
    const stats = gpu.bnStats(xs);
    const y = gpu.bnApply(xs, stats, g, b, eps, act, res);
    save([xs, stats, g, y]);
    onStats?.({ kind: 'packed', both: tf.keep(stats) });
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sstats, sg, sy] = saved as [tf.Tensor4D, tf.Tensor2D, tf.Tensor1D, tf.Tensor4D];
        const r = gpu.bnGrad(dy as tf.Tensor4D, sx, sstats, sg, sy, eps, act, res !== undefined);
        return r.dres ? [r.dx, r.dgamma, r.dbeta, r.dres] : [r.dx, r.dgamma, r.dbeta];
      },
    };
  };
  const f = tf.customGrad(
    body as (...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      value: tf.Tensor;
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[];
    },
  );
  return (residual ? f(x, gamma, beta, residual) : f(x, gamma, beta)) as tf.Tensor4D;
}

/** torch's running-statistic update: r = (1 - m) r + m * stat, the variance made unbiased. */
export function updateRunningStats(
  runningMean: tf.Variable,
  runningVar: tf.Variable,
  stats: BnStats,
  count: number,
  momentum: number,
): void {
  const unbias = count > 1 ? count / (count - 1) : 1;
  tf.tidy(() => {
    if (stats.kind === 'packed') {
      runningMean.assign(gpu.runningStat(runningMean as tf.Tensor1D, stats.both, 0, momentum, 1));
      runningVar.assign(gpu.runningStat(runningVar as tf.Tensor1D, stats.both, 1, momentum, unbias));
      return;
    }
    const { mean, variance } = stats;
    const unbiased = unbias !== 1 ? tf.mul(variance, unbias) : variance;
    runningMean.assign(tf.add(tf.mul(runningMean, 1 - momentum), tf.mul(mean, momentum)));
    runningVar.assign(tf.add(tf.mul(runningVar, 1 - momentum), tf.mul(unbiased, momentum)));
  });
}

/**
 * One torch.optim.SGD step (dampening 0) for one parameter with a momentum buffer: two libtorch
 * calls on torch, TF.js ops elsewhere (webgpu takes all parameters at once: sgdMomentumFlatStep):
 * g' = g + wd p; buf = mu buf + g'; p -= lr (nesterov ? g' + mu buf : buf).
 * Returns the new buffer and parameter (the caller assigns them).
 */
export function sgdMomentumStep(
  p: tf.Tensor,
  buf: tf.Tensor,
  g: tf.Tensor,
  lr: number,
  momentum: number,
  weightDecay: number,
  nesterov: boolean,
): [tf.Tensor, tf.Tensor] {
  if (torchActive()) return torchSgdMomentum(p, buf, g, lr, momentum, weightDecay, nesterov);
  const gd = weightDecay !== 0 ? tf.add(g, tf.mul(p, weightDecay)) : g;
  const next = tf.add(tf.mul(buf, momentum), gd);
  const step = nesterov ? tf.add(gd, tf.mul(next, momentum)) : next;
  return [next, tf.sub(p, tf.mul(step, lr))];
}

/**
 * The SGD momentum step for all parameters at once with one flat momentum buffer, on webgpu only
 * (when fusedWebGpuActive): one program for every buffer plus one per parameter, instead of two
 * per parameter. Elsewhere sgdMomentumStep runs per parameter.
 */
export { sgdMomentumFlat as sgdMomentumFlatStep } from './webgpu/ops.js';
