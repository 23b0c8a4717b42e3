/**
 * ferry's own WebGPU compute programs, in the shape TensorFlow.js's WebGPU backend runs
 * (`backend.runWebGPUProgram`): the backend adds the bindings (`result`, one array per variable
 * name, `uniforms`), and the shader's `main(index)` is called once per invocation with a flat
 * index. Every program here is one dispatch over a flat range of invocations and reads its
 * arrays directly, so the index arithmetic is all in view.
 *
 * Conventions: `c` is 4 when the channel count allows vec4 access (then every array is read and
 * written as vec4<f32> and indices count vec4s), else 1. Sizes that vary between calls are
 * uniforms, so one compiled pipeline serves every layer of a network; only `c`, and flags that
 * change the code, are part of the shader key.
 */

/** What TensorFlow.js's WebGPU backend needs of a program (its WebGPUProgram interface). */
export interface GpuProgram {
  readonly variableNames: string[];
  readonly outputShape: number[];
  shaderKey: string;
  readonly dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  readonly workgroupSize: [number, number, number];
  readonly uniforms: string;
  readonly outputComponent: number;
  readonly variableComponents: number[];
  readonly size: boolean;
  getUserCode(): string;
}

/** A uniform value as runWebGPUProgram takes it (in the order the program declares them). */
export interface UniformValue {
  readonly type: 'int32' | 'float32';
  readonly data: number[];
}

export const WORKGROUP = 64;

export const int = (v: number): UniformValue => ({ type: 'int32', data: [v] });
export const float = (v: number): UniformValue => ({ type: 'float32', data: [v] });

function vec(c: number): string {
  return c === 4 ? 'vec4<f32>' : 'f32';
}

/** Base: a flat dispatch of `invocations` threads; subclasses give the code. */
abstract class FlatProgram implements GpuProgram {
  readonly dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  readonly workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  readonly size = false;
  readonly variableComponents: number[];
  shaderKey: string;

  constructor(
    readonly variableNames: string[],
    readonly outputShape: number[],
    readonly outputComponent: number,
    invocations: number,
    readonly uniforms: string,
    key: string,
  ) {
    this.variableComponents = variableNames.map(() => outputComponent);
    // runWebGPUProgram folds an x count above the device limit into y and z.
    this.dispatch = [Math.ceil(invocations / WORKGROUP), 1, 1];
    this.shaderKey = `ferry_${key}_c${outputComponent}`;
  }

  abstract getUserCode(): string;
}

/**
 * Convolution geometry as uniforms, shared by the programs that walk filter taps: input height and
 * width, output height and width, filter width, strides, top/left padding. `tapSource` maps an
 * output row p = (n, oh, ow) and a tap (kh, kw) to the input pixel it reads, (n, ih, iw).
 */
const GEOMETRY_UNIFORMS =
  'inH : i32, inW : i32, outH : i32, outW : i32, kW : i32, strideH : i32, strideW : i32, padT : i32, padL : i32,';

const TAP_SOURCE = `
      fn tapSource(p : i32, kh : i32, kw : i32, dilH : i32, dilW : i32) -> vec3<i32> {
        let plane = uniforms.outH * uniforms.outW;
        let n = p / plane;
        let r = p - n * plane;
        let oh = r / uniforms.outW;
        let ow = r - oh * uniforms.outW;
        return vec3<i32>(n, oh * uniforms.strideH - uniforms.padT + kh * dilH, ow * uniforms.strideW - uniforms.padL + kw * dilW);
      }
      fn insideInput(src : vec3<i32>) -> bool {
        return src.y >= 0 && src.y < uniforms.inH && src.z >= 0 && src.z < uniforms.inW;
      }`;

/**
 * im2col for a convolution's filter gradient: row p = (n, oh, ow), column (kh, kw, ci), the input
 * value under that filter tap (0 in the padding). With this column order, dW = im2col^T * dy is
 * the HWIO filter gradient as it lies in memory. Channels-last input [n, h, w, cin].
 */
export class Im2ColProgram extends FlatProgram {
  constructor(rows: number, cols: number, c: number) {
    super(
      ['x'],
      [rows, cols],
      c,
      (rows * cols) / c,
      `count : i32, cols : i32, cin : i32, ${GEOMETRY_UNIFORMS} dilH : i32, dilW : i32,`,
      'im2col',
    );
  }

  getUserCode(): string {
    const c = this.outputComponent;
    return `
      ${TAP_SOURCE}
      fn main(index : i32) {
        if (index >= uniforms.count) { return; }
        let flat = index * ${c};
        let p = flat / uniforms.cols;
        let col = flat - p * uniforms.cols;
        let tap = col / uniforms.cin;
        let ci = col - tap * uniforms.cin;
        let kh = tap / uniforms.kW;
        let src = tapSource(p, kh, tap - kh * uniforms.kW, uniforms.dilH, uniforms.dilW);
        var v = ${vec(c)}(0.0);
        if (insideInput(src)) {
          v = x[(((src.x * uniforms.inH + src.y) * uniforms.inW + src.z) * uniforms.cin + ci) / ${c}];
        }
        result[index] = v;
      }`;
  }
}

/**
 * out[j] = sum over s of parts[s * stride + offset + j], j < len: the reduction that closes a
 * split-K product or a two-pass statistic. Consecutive invocations read consecutive addresses.
 */
export class LeadingSumProgram extends FlatProgram {
  constructor(len: number, c: number) {
    super(['parts'], [len], c, len / c, 'count : i32, parts : i32, stride : i32, offset : i32,', 'leading_sum');
  }

  getUserCode(): string {
    const c = this.outputComponent;
    return `
      fn main(index : i32) {
        if (index >= uniforms.count) { return; }
        var acc = ${vec(c)}(0.0);
        let base = uniforms.offset / ${c} + index;
        let step = uniforms.stride / ${c};
        for (var s = 0; s < uniforms.parts; s = s + 1) {
          acc = acc + parts[s * step + base];
        }
        result[index] = acc;
      }`;
  }
}

/**
 * Depthwise filter gradient, split over the output positions: invocation (s, tap, ch) sums
 * x(tap-shifted) * dy over rows [s * chunk, (s + 1) * chunk) into parts[s, tap, ch]; a
 * LeadingSumProgram then adds the S parts.
 */
export class DepthwiseFilterPartsProgram extends FlatProgram {
  constructor(parts: number, taps: number, channels: number, c: number) {
    super(
      ['x', 'dy'],
      [parts, taps * channels],
      c,
      (parts * taps * channels) / c,
      `count : i32, ch : i32, taps : i32, rows : i32, chunk : i32, ${GEOMETRY_UNIFORMS}`,
      'dw_filter_parts',
    );
  }

  getUserCode(): string {
    const c = this.outputComponent;
    return `
      ${TAP_SOURCE}
      fn main(index : i32) {
        if (index >= uniforms.count) { return; }
        let flat = index * ${c};
        let per = uniforms.taps * uniforms.ch;
        let s = flat / per;
        let rem = flat - s * per;
        let tap = rem / uniforms.ch;
        let ch = rem - tap * uniforms.ch;
        let kh = tap / uniforms.kW;
        let kw = tap - kh * uniforms.kW;
        let start = s * uniforms.chunk;
        let end = min(start + uniforms.chunk, uniforms.rows);
        var acc = ${vec(c)}(0.0);
        for (var p = start; p < end; p = p + 1) {
          let src = tapSource(p, kh, kw, 1, 1);
          if (insideInput(src)) {
            acc = acc + x[(((src.x * uniforms.inH + src.y) * uniforms.inW + src.z) * uniforms.ch + ch) / ${c}] * dy[(p * uniforms.ch + ch) / ${c}];
          }
        }
        result[index] = acc;
      }`;
  }
}

/**
 * BatchNorm statistics, first pass: invocation (s, ch) walks rows s, s + S, s + 2S, ... of the
 * [rows, ch] activations and writes sum(v) and sum(v^2) of v = x - x[0, ch] (shifted by the first
 * row, so the variance does not cancel catastrophically) to parts[s, 0, ch] and parts[s, 1, ch].
 */
export class BnStatsPartsProgram extends FlatProgram {
  constructor(parts: number, channels: number, c: number) {
    super(
      ['x'],
      [parts, 2, channels],
      c,
      (parts * channels) / c,
      'count : i32, ch : i32, rows : i32, parts : i32,',
      'bn_stats_parts',
    );
  }

  getUserCode(): string {
    return pairedPartsMain(this.outputComponent, 'let shift = x[lane];', 'let v = x[i] - shift;', 'v', 'v * v');
  }
}

/**
 * main() of a first pass that sums two per-channel quantities `a` and `b` over rows s, s + S,
 * s + 2S, ... of [rows, ch] data into parts[s, 0, ch] and parts[s, 1, ch] (uniforms count, ch,
 * rows, parts). `setup` runs once per invocation (lane = channel lane), `body` once per row
 * (i = index of the row's element).
 */
function pairedPartsMain(c: number, setup: string, body: string, a: string, b: string): string {
  return `
      fn main(index : i32) {
        if (index >= uniforms.count) { return; }
        let lanes = uniforms.ch / ${c};
        let s = index / lanes;
        let lane = index - s * lanes;
        ${setup}
        var s1 = ${vec(c)}(0.0);
        var s2 = ${vec(c)}(0.0);
        for (var p = s; p < uniforms.rows; p = p + uniforms.parts) {
          let i = p * lanes + lane;
          ${body}
          s1 = s1 + ${a};
          s2 = s2 + ${b};
        }
        result[(s * 2) * lanes + lane] = s1;
        result[(s * 2 + 1) * lanes + lane] = s2;
      }`;
}

/**
 * Base of the reductions over many parts: one workgroup of WORKGROUP invocations per output
 * (vec4) lane; invocation t adds parts t, t + WORKGROUP, ..., then the workgroup adds its
 * WORKGROUP partial sums in shared memory. Many parts (each a short run of rows) keep the first
 * pass's memory traffic spread over enough invocations, and this pass stays one dispatch.
 * Barriers need uniform control flow: out-of-range workgroups (a folded dispatch) compute and
 * discard instead of returning early.
 */
abstract class GroupReduceProgram extends FlatProgram {
  constructor(
    variableNames: string[],
    outputShape: number[],
    c: number,
    outputs: number,
    uniforms: string,
    key: string,
  ) {
    super(variableNames, outputShape, c, outputs * WORKGROUP, uniforms, key);
  }

  /** WGSL of the shared arrays and the tree step, for `names` accumulators. */
  protected tree(names: string[]): { decl: string; reduce: string } {
    const T = vec(this.outputComponent);
    const decl = names.map((n) => `var<workgroup> ${n}Shared : array<${T}, ${WORKGROUP}>;`).join('\n');
    const reduce = `
        ${names.map((n) => `${n}Shared[lane] = ${n};`).join('\n        ')}
        workgroupBarrier();
        for (var w = ${WORKGROUP / 2}; w > 0; w = w / 2) {
          if (lane < w) {
            ${names.map((n) => `${n}Shared[lane] = ${n}Shared[lane] + ${n}Shared[lane + w];`).join('\n            ')}
          }
          workgroupBarrier();
        }`;
    return { decl, reduce };
  }
}

/** out[j] = sum over s of parts[s * stride + offset + j], j < len, one workgroup per output lane. */
export class GroupSumProgram extends GroupReduceProgram {
  constructor(len: number, c: number) {
    super(['parts'], [len], c, len / c, 'count : i32, parts : i32, stride : i32, offset : i32,', 'group_sum');
  }

  getUserCode(): string {
    const c = this.outputComponent;
    const { decl, reduce } = this.tree(['acc']);
    return `
      ${decl}
      fn main(index : i32) {
        let j = index / ${WORKGROUP};
        let lane = index - j * ${WORKGROUP};
        let inRange = j < uniforms.count;
        let base = uniforms.offset / ${c} + j;
        let step = uniforms.stride / ${c};
        var acc = ${vec(c)}(0.0);
        if (inRange) {
          for (var s = lane; s < uniforms.parts; s = s + ${WORKGROUP}) {
            acc = acc + parts[s * step + base];
          }
        }
        ${reduce}
        if (inRange && lane == 0) { result[j] = accShared[0]; }
      }`;
  }
}

/** BatchNorm statistics, second pass: [mean; biased variance] per channel from the parts. */
export class BnStatsFinalProgram extends GroupReduceProgram {
  constructor(channels: number, c: number) {
    super(
      ['parts', 'x'],
      [2, channels],
      c,
      channels / c,
      'count : i32, ch : i32, parts : i32, n : f32,',
      'bn_stats_final',
    );
  }

  getUserCode(): string {
    const c = this.outputComponent;
    const T = vec(c);
    const { decl, reduce } = this.tree(['s1', 's2']);
    return `
      ${decl}
      fn main(index : i32) {
        let j = index / ${WORKGROUP};
        let lane = index - j * ${WORKGROUP};
        let inRange = j < uniforms.count;
        let lanes = uniforms.ch / ${c};
        var s1 = ${T}(0.0);
        var s2 = ${T}(0.0);
        if (inRange) {
          for (var s = lane; s < uniforms.parts; s = s + ${WORKGROUP}) {
            s1 = s1 + parts[(s * 2) * lanes + j];
            s2 = s2 + parts[(s * 2 + 1) * lanes + j];
          }
        }
        ${reduce}
        if (inRange && lane == 0) {
          let m = s1Shared[0] / uniforms.n;
          result[j] = x[j] + m;
          result[lanes + j] = max(s2Shared[0] / uniforms.n - m * m, ${T}(0.0));
        }
      }`;
  }
}

/**
 * y = act(gamma * (x - mean) / sqrt(var + eps) + beta [+ residual]).
 * stats is [mean; var] as BnStatsFinalProgram writes it.
 */
export class BnApplyProgram extends FlatProgram {
  constructor(
    size: number,
    c: number,
    readonly act: Activation,
    readonly residual: boolean,
  ) {
    super(
      residual ? ['x', 'stats', 'gamma', 'beta', 'res'] : ['x', 'stats', 'gamma', 'beta'],
      [size],
      c,
      size / c,
      'count : i32, ch : i32, eps : f32,',
      `bn_apply_${act}_${residual ? 'res' : 'nores'}`,
    );
  }

  getUserCode(): string {
    const c = this.outputComponent;
    return `
      fn main(index : i32) {
        if (index >= uniforms.count) { return; }
        let lanes = uniforms.ch / ${c};
        let lane = index % lanes;
        let inv = inverseSqrt(stats[lanes + lane] + ${vec(c)}(uniforms.eps));
        var y = (x[index] - stats[lane]) * inv * gamma[lane] + beta[lane];
        ${this.residual ? 'y = y + res[index];' : ''}
        ${actExpr(this.act, c)}
        result[index] = y;
      }`;
  }
}

/** The activation a fused BatchNorm ends in. */
export type Activation = 'none' | 'relu' | 'relu6';

function actExpr(act: Activation, c: number): string {
  const T = vec(c);
  if (act === 'relu') return `y = max(y, ${T}(0.0));`;
  if (act === 'relu6') return `y = clamp(y, ${T}(0.0), ${T}(6.0));`;
  return '';
}

/** dz = dy masked where the activation was flat (y at its clamp), from the saved output y. */
function dzExpr(act: Activation, c: number): string {
  const T = vec(c);
  if (act === 'relu') return `select(${T}(0.0), dy[i], y[i] > ${T}(0.0))`;
  if (act === 'relu6') return `select(${T}(0.0), dy[i], (y[i] > ${T}(0.0)) & (y[i] < ${T}(6.0)))`;
  return 'dy[i]';
}

/**
 * BatchNorm backward, first pass: parts[s, 0, ch] = sum(dz), parts[s, 1, ch] = sum(dz * xhat) over
 * rows s, s + S, ...; dz is the gradient at the normalised output (after the ReLU mask).
 */
export class BnGradPartsProgram extends FlatProgram {
  constructor(
    parts: number,
    channels: number,
    c: number,
    readonly act: Activation,
  ) {
    super(
      act !== 'none' ? ['x', 'stats', 'dy', 'y'] : ['x', 'stats', 'dy'],
      [parts, 2, channels],
      c,
      (parts * channels) / c,
      'count : i32, ch : i32, rows : i32, parts : i32, eps : f32,',
      `bn_grad_parts_${act}`,
    );
  }

  getUserCode(): string {
    const c = this.outputComponent;
    const setup = `let mean = stats[lane];
        let inv = inverseSqrt(stats[lanes + lane] + ${vec(c)}(uniforms.eps));`;
    return pairedPartsMain(c, setup, `let dz = ${dzExpr(this.act, c)};`, 'dz', 'dz * (x[i] - mean) * inv');
  }
}

/** dx = gamma / sqrt(var + eps) * (dz - dbeta / n - xhat * dgamma / n). */
export class BnGradInputProgram extends FlatProgram {
  constructor(
    size: number,
    c: number,
    readonly act: Activation,
  ) {
    super(
      // At most 7 inputs: WebGPU's default limit is 8 storage buffers per shader stage.
      act !== 'none'
        ? ['x', 'stats', 'gamma', 'dbeta', 'dgamma', 'dy', 'y']
        : ['x', 'stats', 'gamma', 'dbeta', 'dgamma', 'dy'],
      [size],
      c,
      size / c,
      'count : i32, ch : i32, eps : f32, n : f32,',
      `bn_grad_input_${act}`,
    );
  }

  getUserCode(): string {
    const c = this.outputComponent;
    const T = vec(c);
    return `
      fn main(index : i32) {
        if (index >= uniforms.count) { return; }
        let lanes = uniforms.ch / ${c};
        let lane = index % lanes;
        let i = index;
        let inv = inverseSqrt(stats[lanes + lane] + ${T}(uniforms.eps));
        let xhat = (x[i] - stats[lane]) * inv;
        let dz = ${dzExpr(this.act, c)};
        result[index] = gamma[lane] * inv * (dz - dbeta[lane] / uniforms.n - xhat * dgamma[lane] / uniforms.n);
      }`;
  }
}

/** The activation's gradient alone (for the residual branch of a fused block). */
export class ActMaskProgram extends FlatProgram {
  constructor(
    size: number,
    c: number,
    readonly act: Exclude<Activation, 'none'>,
  ) {
    super(['dy', 'y'], [size], c, size / c, 'count : i32,', `act_mask_${act}`);
  }

  getUserCode(): string {
    const c = this.outputComponent;
    return `
      fn main(index : i32) {
        if (index >= uniforms.count) { return; }
        let i = index;
        result[index] = ${dzExpr(this.act, c)};
      }`;
  }
}

/**
 * Running statistic update, torch's: r = (1 - momentum) * r + momentum * stat * factor, with stat
 * row `row` of [mean; var] (factor n / (n - 1) makes the variance unbiased).
 */
export class RunningStatProgram extends FlatProgram {
  constructor(channels: number, c: number) {
    super(
      ['running', 'stats'],
      [channels],
      c,
      channels / c,
      'count : i32, row : i32, momentum : f32, factor : f32,',
      'bn_running',
    );
  }

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index >= uniforms.count) { return; }
        let stat = stats[uniforms.row * uniforms.count + index] * uniforms.factor;
        result[index] = (1.0 - uniforms.momentum) * running[index] + uniforms.momentum * stat;
      }`;
  }
}

/** All momentum buffers at once, end to end: buf = momentum * buf + (g [+ weightDecay * p]). */
export class FlatMomentumProgram extends FlatProgram {
  constructor(
    size: number,
    c: number,
    readonly decay: boolean,
  ) {
    super(
      decay ? ['buf', 'g', 'p'] : ['buf', 'g'],
      [size],
      c,
      size / c,
      'count : i32, momentum : f32, weightDecay : f32,',
      `sgd_flat_buffer_${decay ? 'wd' : 'nowd'}`,
    );
  }

  getUserCode(): string {
    const g = this.decay ? '(g[index] + uniforms.weightDecay * p[index])' : 'g[index]';
    return `
      fn main(index : i32) {
        if (index >= uniforms.count) { return; }
        result[index] = uniforms.momentum * buf[index] + ${g};
      }`;
  }
}

/**
 * One parameter's step from the flat buffer: p -= lr * (nesterov ? (g + wd * p) + momentum * b : b)
 * with b = buf[offset + i]. Scalar access: offsets need not be multiples of 4.
 */
export class SgdFromFlatProgram extends FlatProgram {
  constructor(
    size: number,
    readonly nesterov: boolean,
  ) {
    super(
      nesterov ? ['p', 'buf', 'g'] : ['p', 'buf'],
      [size],
      1,
      size,
      'count : i32, offset : i32, lr : f32, momentum : f32, weightDecay : f32,',
      `sgd_from_flat_${nesterov ? 'nesterov' : 'plain'}`,
    );
  }

  getUserCode(): string {
    const b = 'buf[uniforms.offset + index]';
    const step = this.nesterov ? `(g[index] + uniforms.weightDecay * p[index]) + uniforms.momentum * ${b}` : b;
    return `
      fn main(index : i32) {
        if (index >= uniforms.count) { return; }
        result[index] = p[index] - uniforms.lr * (${step});
      }`;
  }
}
