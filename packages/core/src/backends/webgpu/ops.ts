import * as tf from '@tensorflow/tfjs-core';
import {
  ActMaskProgram,
  BnApplyProgram,
  BnGradInputProgram,
  BnGradPartsProgram,
  BnStatsFinalProgram,
  BnStatsPartsProgram,
  DepthwiseFilterPartsProgram,
  FlatMomentumProgram,
  Im2ColProgram,
  GroupSumProgram,
  LeadingSumProgram,
  RunningStatProgram,
  SgdFromFlatProgram,
  float,
  int,
  type Activation,
  type GpuProgram,
  type UniformValue,
} from './programs.js';

/**
 * ferry's WebGPU operations: the convolution filter gradients (registered as TensorFlow.js
 * kernels, see workarounds.ts) and the fused BatchNorm and SGD steps the engine calls directly
 * (backends/fused.ts). Each runs ferry's programs through the backend's own runWebGPUProgram,
 * so buffers, pipelines caching and command submission stay TensorFlow.js's.
 */

interface WebGpuBackendLike {
  runWebGPUProgram(
    program: GpuProgram,
    inputs: tf.TensorInfo[],
    outputDtype: tf.DataType,
    uniforms?: UniformValue[],
  ): tf.TensorInfo;
  readonly device?: { readonly limits?: { readonly maxStorageBufferBindingSize?: number } };
}

function backend(): WebGpuBackendLike {
  return tf.backend() as unknown as WebGpuBackendLike;
}

function run(program: GpuProgram, inputs: tf.Tensor[], uniforms: UniformValue[]): tf.Tensor {
  const info = backend().runWebGPUProgram(program, inputs, 'float32', uniforms);
  return tf.engine().makeTensorFromTensorInfo(info);
}

const lanesOf = (n: number): number => (n % 4 === 0 ? 4 : 1);

/** Tuning of the split-K reductions; tests lower them to exercise every path on small shapes. */
export interface WebGpuTuning {
  /** Workgroups a filter-gradient product should reach before more splits stop paying. */
  readonly targetWorkgroups: number;
  /** Fewest rows (of the reduced axis) one split may hold. */
  readonly minRowsPerSplit: number;
  /** Invocations a per-channel reduction (BatchNorm, depthwise filter gradient) aims for. */
  readonly targetInvocations: number;
  /** Largest im2col buffer in bytes before the batch is processed in chunks. */
  readonly maxIm2colBytes: number;
}

export const DEFAULT_TUNING: WebGpuTuning = {
  targetWorkgroups: 1024,
  minRowsPerSplit: 256,
  targetInvocations: 65536,
  maxIm2colBytes: 256 * 1024 * 1024,
};

let tuning: WebGpuTuning = DEFAULT_TUNING;

export function setWebGpuTuning(t: Partial<WebGpuTuning>): void {
  tuning = { ...DEFAULT_TUNING, ...t };
}

/**
 * out[j] = sum_s parts[s * stride + offset + j] for j < len: a loop per output when the parts are
 * few (split-K products), a workgroup per output when they are many (per-channel statistics).
 */
function leadingSum(parts: tf.Tensor, count: number, len: number, stride: number, offset: number): tf.Tensor1D {
  const c = lanesOf(len) === 4 && stride % 4 === 0 && offset % 4 === 0 ? 4 : 1;
  const program = count > GROUP_SUM_FROM ? new GroupSumProgram(len, c) : new LeadingSumProgram(len, c);
  return run(program, [tf.reshape(parts, [-1])], [int(len / c), int(count), int(stride), int(offset)]) as tf.Tensor1D;
}

/** Above this many parts a reduction uses a workgroup per output. */
const GROUP_SUM_FROM = 64;

/** Pure: how many splits of `rows` rows a [m, n] product gets (a divisor of rows; 1 = none). */
export function splitCount(rows: number, m: number, n: number, t: WebGpuTuning = tuning): number {
  const tiles = Math.ceil(m / 32) * Math.ceil(n / 32);
  const want = Math.min(Math.ceil(t.targetWorkgroups / tiles), Math.floor(rows / t.minRowsPerSplit));
  for (let s = want; s > 1; s--) if (rows % s === 0) return s;
  return 1;
}

type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;

/** The uniforms GEOMETRY_UNIFORMS declares, in its order. */
function geometry(h: number, w: number, info: tf.backend_util.Conv2DInfo): UniformValue[] {
  return [
    h,
    w,
    info.outHeight,
    info.outWidth,
    info.filterWidth,
    info.strideHeight,
    info.strideWidth,
    info.padInfo.top,
    info.padInfo.left,
  ].map(int);
}

/**
 * Conv2D filter gradient: im2col (one program; skipped for 1x1 stride-1 convolutions), then
 * dW = im2col^T * dy as a batched product over S row splits (so a reduction over n*oh*ow rows
 * fills the GPU), then one program adding the S partial products. Channels-last, float32.
 */
export function conv2dFilterGrad(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: readonly [number, number, number, number],
  strides: number | [number, number],
  pad: Pad,
  dimRoundingMode?: 'floor' | 'round' | 'ceil',
  dilations: number | [number, number] = 1,
): tf.Tensor4D {
  return tf.tidy(() => {
    const info = tf.backend_util.computeConv2DInfo(x.shape, [...filterShape], strides, dilations, pad, dimRoundingMode);
    const [n, h, w, cin] = x.shape;
    const [kh, kw, , cout] = filterShape;
    const plane = info.outHeight * info.outWidth;
    const cols = kh * kw * cin;
    const perImage = plane * cols * 4;
    const chunk = Math.max(1, Math.min(n, Math.floor(tuning.maxIm2colBytes / perImage)));
    let total: tf.Tensor | undefined;
    for (let b = 0; b < n; b += chunk) {
      const m = Math.min(chunk, n - b);
      const xs = m === n ? x : tf.slice(x, [b, 0, 0, 0], [m, h, w, cin]);
      const dys = m === n ? dy : tf.slice(dy, [b, 0, 0, 0], [m, info.outHeight, info.outWidth, cout]);
      const part = filterGradRows(xs, dys, info, m * plane, cols, cout);
      total = total ? tf.add(total, part) : part;
    }
    return tf.reshape(total!, [kh, kw, cin, cout]) as tf.Tensor4D;
  });
}

function filterGradRows(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  info: tf.backend_util.Conv2DInfo,
  rows: number,
  cols: number,
  cout: number,
): tf.Tensor {
  const [, h, w, cin] = x.shape;
  const p = info.padInfo;
  const identity =
    info.filterHeight === 1 &&
    info.filterWidth === 1 &&
    info.strideHeight === 1 &&
    info.strideWidth === 1 &&
    p.top === 0 &&
    p.left === 0;
  let a: tf.Tensor;
  if (identity) a = tf.reshape(x, [rows, cin]);
  else {
    const c = lanesOf(cin);
    a = run(
      new Im2ColProgram(rows, cols, c),
      [x],
      [
        int((rows * cols) / c),
        int(cols),
        int(cin),
        ...geometry(h, w, info),
        int(info.dilationHeight),
        int(info.dilationWidth),
      ],
    );
  }
  const b = tf.reshape(dy, [rows, cout]);
  const s = splitCount(rows, cols, cout);
  if (s === 1) return tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D, true, false);
  const parts = tf.matMul(
    tf.reshape(a, [s, rows / s, cols]) as tf.Tensor3D,
    tf.reshape(b, [s, rows / s, cout]) as tf.Tensor3D,
    true,
    false,
  );
  return leadingSum(parts, s, cols * cout, cols * cout, 0);
}

/** Depthwise (multiplier 1) filter gradient: S row-split partial sums, then their sum. */
export function depthwiseFilterGrad(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: readonly [number, number, number, number],
  strides: number | [number, number],
  pad: Pad,
  dimRoundingMode?: 'floor' | 'round' | 'ceil',
): tf.Tensor4D {
  return tf.tidy(() => {
    const [kh, kw, ch] = filterShape;
    const info = tf.backend_util.computeConv2DInfo(x.shape, [...filterShape], strides, 1, pad, dimRoundingMode, true);
    const [n, h, w] = x.shape;
    const rows = n * info.outHeight * info.outWidth;
    const taps = kh * kw;
    const want = Math.max(1, Math.min(Math.ceil(tuning.targetInvocations / (taps * ch)), Math.ceil(rows / 32)));
    const chunk = Math.ceil(rows / want);
    const s = Math.ceil(rows / chunk);
    const c = lanesOf(ch);
    const parts = run(
      new DepthwiseFilterPartsProgram(s, taps, ch, c),
      [x, dy],
      [int((s * taps * ch) / c), int(ch), int(taps), int(rows), int(chunk), ...geometry(h, w, info)],
    );
    const total = s === 1 ? parts : leadingSum(parts, s, taps * ch, taps * ch, 0);
    return tf.reshape(total, [kh, kw, ch, 1]) as tf.Tensor4D;
  });
}

/**
 * Row splits of a per-channel reduction over `rows` rows of `channels` channels: enough
 * invocations (one per part and vec4 lane) to keep memory busy, at least 4 rows each.
 */
function reductionParts(rows: number, channels: number): number {
  const lanes = channels % 4 === 0 ? channels / 4 : channels;
  return Math.max(1, Math.min(Math.ceil(rows / 4), Math.ceil(tuning.targetInvocations / lanes)));
}

/** [mean; biased variance] per channel of NHWC x, as a [2, c] tensor (two programs). */
export function bnStats(x: tf.Tensor4D): tf.Tensor2D {
  const [n, h, w, ch] = x.shape;
  const rows = n * h * w;
  const c = lanesOf(ch);
  const s = reductionParts(rows, ch);
  const parts = run(new BnStatsPartsProgram(s, ch, c), [x], [int((s * ch) / c), int(ch), int(rows), int(s)]);
  const stats = run(new BnStatsFinalProgram(ch, c), [parts, x], [int(ch / c), int(ch), int(s), float(rows)]);
  parts.dispose();
  return stats as tf.Tensor2D;
}

/** act(gamma * xhat + beta [+ residual]) from precomputed stats (one program). */
export function bnApply(
  x: tf.Tensor4D,
  stats: tf.Tensor2D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  eps: number,
  act: Activation,
  residual?: tf.Tensor4D,
): tf.Tensor4D {
  const ch = x.shape[3];
  const c = lanesOf(ch);
  const inputs = residual ? [x, stats, gamma, beta, residual] : [x, stats, gamma, beta];
  return tf.reshape(
    run(new BnApplyProgram(x.size, c, act, residual !== undefined), inputs, [int(x.size / c), int(ch), float(eps)]),
    x.shape,
  ) as tf.Tensor4D;
}

/**
 * BatchNorm backward through the activation: [dx, dgamma, dbeta, dresidual?] from the saved
 * input, stats and output (four programs, five with a residual).
 */
export function bnGrad(
  dy: tf.Tensor4D,
  x: tf.Tensor4D,
  stats: tf.Tensor2D,
  gamma: tf.Tensor1D,
  y: tf.Tensor4D,
  eps: number,
  act: Activation,
  withResidual: boolean,
): { dx: tf.Tensor4D; dgamma: tf.Tensor1D; dbeta: tf.Tensor1D; dres?: tf.Tensor4D } {
  const [n, h, w, ch] = x.shape;
  const rows = n * h * w;
  const c = lanesOf(ch);
  const s = reductionParts(rows, ch);
  const masked = act !== 'none';
  const parts = run(new BnGradPartsProgram(s, ch, c, act), masked ? [x, stats, dy, y] : [x, stats, dy], [
    int((s * ch) / c),
    int(ch),
    int(rows),
    int(s),
    float(eps),
  ]);
  const dbeta = leadingSum(parts, s, ch, 2 * ch, 0);
  const dgamma = leadingSum(parts, s, ch, 2 * ch, ch);
  parts.dispose();
  const inputs = masked ? [x, stats, gamma, dbeta, dgamma, dy, y] : [x, stats, gamma, dbeta, dgamma, dy];
  const dx = tf.reshape(
    run(new BnGradInputProgram(x.size, c, act), inputs, [int(x.size / c), int(ch), float(eps), float(rows)]),
    x.shape,
  ) as tf.Tensor4D;
  if (!withResidual) return { dx, dgamma, dbeta };
  const dres =
    act === 'none'
      ? dy
      : (tf.reshape(run(new ActMaskProgram(x.size, c, act), [dy, y], [int(x.size / c)]), x.shape) as tf.Tensor4D);
  return { dx, dgamma, dbeta, dres };
}

/** torch's running-statistic update of one [c] tensor from row `row` of [mean; var] (one program). */
export function runningStat(
  running: tf.Tensor1D,
  stats: tf.Tensor2D,
  row: 0 | 1,
  momentum: number,
  factor: number,
): tf.Tensor1D {
  const ch = running.shape[0];
  const c = lanesOf(ch);
  return run(
    new RunningStatProgram(ch, c),
    [running, stats],
    [int(ch / c), int(row), float(momentum), float(factor)],
  ) as tf.Tensor1D;
}

/**
 * torch SGD with momentum for many parameters at once: every momentum buffer lives end to end in
 * one flat tensor, updated by one program from the concatenated gradients; each parameter then
 * takes its step from its slice (one program each). Returns the new flat buffer and parameters.
 */
export function sgdMomentumFlat(
  params: readonly tf.Tensor[],
  grads: readonly tf.Tensor[],
  buf: tf.Tensor1D,
  lr: number,
  momentum: number,
  weightDecay: number,
  nesterov: boolean,
): { buf: tf.Tensor1D; params: tf.Tensor[] } {
  const flat = (ts: readonly tf.Tensor[]): tf.Tensor => tf.concat(ts.map((t) => tf.reshape(t, [-1])));
  const g = flat(grads);
  const decay = weightDecay !== 0;
  const c = lanesOf(buf.size);
  const inputs = decay ? [buf, g, flat(params)] : [buf, g];
  const next = run(new FlatMomentumProgram(buf.size, c, decay), inputs, [
    int(buf.size / c),
    float(momentum),
    float(weightDecay),
  ]) as tf.Tensor1D;
  let offset = 0;
  const out = params.map((p, i) => {
    const ins = nesterov ? [tf.reshape(p, [-1]), next, tf.reshape(grads[i]!, [-1])] : [tf.reshape(p, [-1]), next];
    const r = tf.reshape(
      run(new SgdFromFlatProgram(p.size, nesterov), ins, [
        int(p.size),
        int(offset),
        float(lr),
        float(momentum),
        float(weightDecay),
      ]),
      p.shape,
    );
    offset += p.size;
    return r;
  });
  return { buf: next, params: out };
}
