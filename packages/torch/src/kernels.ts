import * as tf from '@tensorflow/tfjs-core';
import { dtypeCode, type TorchBackend } from './backend.js';

/**
 * The TensorFlow.js kernels of the torch backend: each translates TensorFlow.js's inputs and
 * attributes into one or a few addon calls. Geometry (padding, output sizes, slices) is computed by
 * TensorFlow.js's own helpers, so a kernel here agrees with every other backend on what it means.
 */

type Info = tf.TensorInfo;
type Attrs = Record<string, unknown>;
export type KernelImpl = (inputs: Record<string, Info>, attrs: Attrs, b: TorchBackend) => Info | Info[];

// Op codes of native/ferry_torch.cc (enum Binary, enum Unary, enum Reduce).
const BINARY: Record<string, number> = {
  Add: 0,
  Sub: 1,
  Multiply: 2,
  RealDiv: 3,
  Maximum: 4,
  Minimum: 5,
  Pow: 6,
  SquaredDifference: 7,
  Greater: 8,
  GreaterEqual: 9,
  Less: 10,
  LessEqual: 11,
  Equal: 12,
  NotEqual: 13,
  LogicalAnd: 14,
  LogicalOr: 15,
  FloorDiv: 16,
  Mod: 17,
  Atan2: 18,
};
const BOOL_RESULT = new Set([
  'Greater',
  'GreaterEqual',
  'Less',
  'LessEqual',
  'Equal',
  'NotEqual',
  'LogicalAnd',
  'LogicalOr',
]);
const UNARY: Record<string, number> = {
  Neg: 0,
  Exp: 1,
  Log: 2,
  Sqrt: 3,
  Rsqrt: 4,
  Square: 5,
  Relu: 6,
  Relu6: 7,
  Abs: 8,
  Sign: 9,
  Floor: 10,
  Ceil: 11,
  Round: 12,
  Reciprocal: 13,
  Sigmoid: 14,
  Tanh: 15,
  Log1p: 16,
  Expm1: 17,
  Erf: 18,
  LogicalNot: 19,
  IsNan: 20,
  Sin: 21,
  Cos: 22,
  Softplus: 23,
  Elu: 24,
  IsInf: 26,
  Selu: 27,
};
const IDENTITY = 25;
const REDUCE = { Sum: 0, Mean: 1, Max: 2, Min: 3, Prod: 4, Any: 5, All: 6 } as const;
const BOOL_UNARY = new Set(['LogicalNot', 'IsNan', 'IsInf']);

const num = (v: unknown): number => v as number;

function unary(name: string, code: number): KernelImpl {
  return ({ x }, _a, b) => b.wrap(b.native.UnaryOp(code, b.idOf(x!)), BOOL_UNARY.has(name) ? 'bool' : x!.dtype);
}

function binary(name: string, code: number): KernelImpl {
  return ({ a, b: y }, _attrs, b) => {
    const dtype = BOOL_RESULT.has(name) ? 'bool' : tf.upcastType(a!.dtype, y!.dtype);
    return b.wrap(b.native.BinaryOp(code, b.idOf(a!), b.idOf(y!), dtypeCode(dtype)), dtype);
  };
}

function axesOf(axis: unknown, shape: number[]): number[] {
  return tf.util.parseAxisParam((axis ?? null) as number | number[], shape);
}

function reduce(code: number, axisAttr: string): KernelImpl {
  return ({ x }, attrs, b) => {
    const axes = axesOf(attrs[axisAttr], x!.shape);
    const keep = attrs['keepDims'] === true;
    if (axes.length === 0) return b.wrap(b.native.UnaryOp(IDENTITY, b.idOf(x!)), x!.dtype);
    const id = b.native.ReduceOp(code, b.idOf(x!), axes, keep);
    const dtype = code === REDUCE.Any || code === REDUCE.All ? 'bool' : x!.dtype === 'bool' ? 'int32' : x!.dtype;
    return b.wrap(id, code === REDUCE.Mean ? 'float32' : dtype);
  };
}

function identity(x: Info, b: TorchBackend): Info {
  b.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

type ConvInfo = tf.backend_util.Conv2DInfo;

/** [sh, sw, dh, dw, top, bottom, left, right], what the addon's convolutions and pools take. */
function geometry(c: ConvInfo): number[] {
  const p = c.padInfo;
  return [c.strideHeight, c.strideWidth, c.dilationHeight, c.dilationWidth, p.top, p.bottom, p.left, p.right];
}

function requireNhwc(attrs: Attrs, kernel: string): void {
  const f = attrs['dataFormat'];
  if (f !== undefined && f !== 'NHWC' && f !== 'channelsLast') {
    throw new Error(`${kernel}: the torch backend takes NHWC tensors (dataFormat ${String(f)})`);
  }
}

function convInfo(xShape: number[], filterShape: number[], attrs: Attrs, depthwise: boolean): ConvInfo {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs['strides'] as [number, number],
    (attrs['dilations'] ?? 1) as [number, number],
    attrs['pad'] as 'valid',
    attrs['dimRoundingMode'] as 'floor' | undefined,
    depthwise,
  );
}

function poolInfo(xShape: number[], attrs: Attrs): ConvInfo {
  return tf.backend_util.computePool2DInfo(
    xShape as [number, number, number, number],
    attrs['filterSize'] as [number, number],
    attrs['strides'] as [number, number],
    1,
    attrs['pad'] as 'valid',
    attrs['dimRoundingMode'] as 'floor' | undefined,
  );
}

function conv(depthwise: boolean): KernelImpl {
  return ({ x, filter }, attrs, b) => {
    requireNhwc(attrs, depthwise ? 'DepthwiseConv2dNative' : 'Conv2D');
    const g = geometry(convInfo(x!.shape, filter!.shape, attrs, depthwise));
    return b.wrap(b.native.Conv2d(b.idOf(x!), b.idOf(filter!), depthwise, g), 'float32');
  };
}

function convInput(depthwise: boolean): KernelImpl {
  return ({ dy, filter }, attrs, b) => {
    requireNhwc(attrs, 'Conv2DBackpropInput');
    const inputShape = attrs['inputShape'] as number[];
    const g = geometry(convInfo(inputShape, filter!.shape, attrs, depthwise));
    return b.wrap(b.native.Conv2dBackpropInput(b.idOf(dy!), b.idOf(filter!), depthwise, g, inputShape), 'float32');
  };
}

function convFilter(depthwise: boolean): KernelImpl {
  return ({ x, dy }, attrs, b) => {
    requireNhwc(attrs, 'Conv2DBackpropFilter');
    const filterShape = attrs['filterShape'] as number[];
    const g = geometry(convInfo(x!.shape, filterShape, attrs, depthwise));
    return b.wrap(b.native.Conv2dBackpropFilter(b.idOf(x!), b.idOf(dy!), depthwise, g, filterShape), 'float32');
  };
}

/** A fused op's activation that is one of the unary kernels, by TensorFlow.js's activation name. */
const ACTIVATION_KERNEL: Readonly<Record<string, string>> = {
  relu: 'Relu',
  relu6: 'Relu6',
  sigmoid: 'Sigmoid',
  elu: 'Elu',
};

/** bias add and activation after a fused conv or matmul (FusedConv2D, _FusedMatMul). */
function epilogue(out: Info, inputs: Record<string, Info>, attrs: Attrs, b: TorchBackend): Info {
  let y = out;
  const replace = (next: number): void => {
    const t = b.wrap(next, 'float32');
    b.disposeData(y.dataId);
    y = t;
  };
  if (inputs['bias']) replace(b.native.BinaryOp(0, b.idOf(y), b.idOf(inputs['bias']), 0));
  const act = attrs['activation'] as string | undefined;
  if (act === undefined || act === 'linear') return y;
  const kernel = ACTIVATION_KERNEL[act];
  if (kernel !== undefined) replace(b.native.UnaryOp(UNARY[kernel]!, b.idOf(y)));
  else if (act === 'leakyrelu') replace(b.native.LeakyRelu(b.idOf(y), num(attrs['leakyreluAlpha'] ?? 0.2)));
  else if (act === 'prelu') replace(b.native.Prelu(b.idOf(y), b.idOf(inputs['preluActivationWeights']!)));
  else throw new Error(`fused activation ${act} is not implemented by the torch backend`);
  return y;
}

function fused(first: KernelImpl): KernelImpl {
  return (inputs, attrs, b) => epilogue(first(inputs, attrs, b) as Info, inputs, attrs, b);
}

const matMul: KernelImpl = ({ a, b: y }, attrs, b) =>
  b.wrap(
    b.native.MatMul(b.idOf(a!), b.idOf(y!), attrs['transposeA'] === true, attrs['transposeB'] === true),
    'float32',
  );

function list(inputs: Record<string, Info>): Info[] {
  return Object.values(inputs);
}

const shapeKernels: Record<string, KernelImpl> = {
  Identity: ({ x }, _a, b) => identity(x!, b),
  Reshape: ({ x }, attrs, b) => {
    const shape = tf.util.inferFromImplicitShape(attrs['shape'] as number[], tf.util.sizeFromShape(x!.shape));
    return b.wrap(b.native.Reshape(b.idOf(x!), shape), x!.dtype);
  },
  Transpose: ({ x }, attrs, b) => b.wrap(b.native.Transpose(b.idOf(x!), attrs['perm'] as number[]), x!.dtype),
  Cast: ({ x }, attrs, b) => {
    const dtype = attrs['dtype'] as tf.DataType;
    if (dtype === x!.dtype) return identity(x!, b);
    return b.wrap(b.native.Cast(b.idOf(x!), dtypeCode(dtype)), dtype);
  },
  Slice: ({ x }, attrs, b) => {
    const [begin, size] = tf.slice_util.parseSliceParams(x!, attrs['begin'] as number[], attrs['size'] as number[]);
    const end = begin!.map((v, i) => v + size![i]!);
    return b.wrap(
      b.native.StridedSlice(
        b.idOf(x!),
        begin!,
        end,
        begin!.map(() => 1),
      ),
      x!.dtype,
    );
  },
  StridedSlice: ({ x }, attrs, b) => {
    const s = tf.slice_util.sliceInfo(
      x!.shape,
      attrs['begin'] as number[],
      attrs['end'] as number[],
      attrs['strides'] as number[],
      num(attrs['beginMask']),
      num(attrs['endMask']),
      num(attrs['ellipsisMask']),
      num(attrs['newAxisMask']),
      num(attrs['shrinkAxisMask']),
    );
    if (s.isIdentity) return b.wrap(b.native.Reshape(b.idOf(x!), s.finalShape), x!.dtype);
    const sliced = b.native.StridedSlice(b.idOf(x!), s.begin, s.end, s.strides);
    const out = b.native.Reshape(sliced, s.finalShape);
    b.native.Free(sliced);
    return b.wrap(out, x!.dtype);
  },
  Concat: (inputs, attrs, b) => {
    const xs = list(inputs);
    const axis = axesOf(attrs['axis'], xs[0]!.shape)[0]!;
    return b.wrap(
      b.native.Concat(
        xs.map((t) => b.idOf(t)),
        axis,
      ),
      xs[0]!.dtype,
    );
  },
  Pack: (inputs, attrs, b) => {
    const xs = list(inputs);
    return b.wrap(
      b.native.Stack(
        xs.map((t) => b.idOf(t)),
        num(attrs['axis']),
      ),
      xs[0]!.dtype,
    );
  },
  Unpack: ({ value }, attrs, b) =>
    b.native.Split(b.idOf(value!), [], num(attrs['axis'])).map((id) => b.wrap(id, value!.dtype)),
  SplitV: ({ x }, attrs, b) => {
    const axis = axesOf(attrs['axis'], x!.shape)[0]!;
    const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, attrs['numOrSizeSplits'] as number[], axis);
    return b.native.Split(b.idOf(x!), sizes, axis).map((id) => b.wrap(id, x!.dtype));
  },
  PadV2: ({ x }, attrs, b) => {
    const paddings = (attrs['paddings'] as [number, number][]).flat();
    return b.wrap(b.native.Pad(b.idOf(x!), paddings, num(attrs['constantValue'] ?? 0)), x!.dtype);
  },
  Tile: ({ x }, attrs, b) => b.wrap(b.native.Tile(b.idOf(x!), attrs['reps'] as number[]), x!.dtype),
  BroadcastTo: ({ x }, attrs, b) => {
    const shape = attrs['shape'] as number[];
    const padded = [...new Array<number>(shape.length - x!.shape.length).fill(1), ...x!.shape];
    const r = b.native.Reshape(b.idOf(x!), padded);
    const out = b.native.Tile(
      r,
      shape.map((d, i) => (padded[i] === d ? 1 : d)),
    );
    b.native.Free(r);
    return b.wrap(out, x!.dtype);
  },
  Reverse: ({ x }, attrs, b) => b.wrap(b.native.Flip(b.idOf(x!), axesOf(attrs['dims'], x!.shape)), x!.dtype),
  Fill: (_i, attrs, b) => {
    const dtype = (attrs['dtype'] ?? 'float32') as tf.DataType;
    return b.wrap(b.native.Fill(attrs['shape'] as number[], num(attrs['value']), dtypeCode(dtype)), dtype);
  },
  ZerosLike: ({ x }, _a, b) => b.wrap(b.native.Fill(x!.shape, 0, dtypeCode(x!.dtype)), x!.dtype),
  OnesLike: ({ x }, _a, b) => b.wrap(b.native.Fill(x!.shape, 1, dtypeCode(x!.dtype)), x!.dtype),
  Range: (_i, attrs, b) => {
    const dtype = (attrs['dtype'] ?? 'float32') as tf.DataType;
    const id = b.native.Range(num(attrs['start']), num(attrs['stop']), num(attrs['step']), dtypeCode(dtype));
    return b.wrap(id, dtype);
  },
  OneHot: ({ indices }, attrs, b) => {
    const dtype = (attrs['dtype'] ?? 'int32') as tf.DataType;
    const id = b.native.OneHot(
      b.idOf(indices!),
      num(attrs['depth']),
      num(attrs['onValue'] ?? 1),
      num(attrs['offValue'] ?? 0),
      dtypeCode(dtype),
    );
    return b.wrap(id, dtype);
  },
  GatherV2: ({ x, indices }, attrs, b) => {
    if (num(attrs['batchDims'] ?? 0) !== 0) throw new Error('GatherV2: batchDims > 0 is not implemented');
    const axis = axesOf(attrs['axis'], x!.shape)[0]!;
    return b.wrap(b.native.Gather(b.idOf(x!), b.idOf(indices!), axis), x!.dtype);
  },
  Select: ({ condition, t, e }, _a, b) => {
    let cond = b.idOf(condition!);
    let owned = false;
    // TensorFlow.js: a rank-1 condition picks whole rows of higher-rank t and e.
    if (condition!.shape.length === 1 && t!.shape.length > 1) {
      cond = b.native.Reshape(cond, [condition!.shape[0]!, ...new Array<number>(t!.shape.length - 1).fill(1)]);
      owned = true;
    }
    const out = b.native.Where(cond, b.idOf(t!), b.idOf(e!));
    if (owned) b.native.Free(cond);
    return b.wrap(out, tf.upcastType(t!.dtype, e!.dtype));
  },
};

const mathKernels: Record<string, KernelImpl> = {
  Step: ({ x }, attrs, b) => b.wrap(b.native.Step(b.idOf(x!), num(attrs['alpha'] ?? 0)), x!.dtype),
  ClipByValue: ({ x }, attrs, b) =>
    b.wrap(b.native.Clip(b.idOf(x!), num(attrs['clipValueMin']), num(attrs['clipValueMax'])), x!.dtype),
  LeakyRelu: ({ x }, attrs, b) => b.wrap(b.native.LeakyRelu(b.idOf(x!), num(attrs['alpha'])), x!.dtype),
  Prelu: ({ x, alpha }, _a, b) => b.wrap(b.native.Prelu(b.idOf(x!), b.idOf(alpha!)), x!.dtype),
  AddN: (inputs, _a, b) => {
    const xs = list(inputs);
    let acc = b.native.UnaryOp(IDENTITY, b.idOf(xs[0]!));
    for (const x of xs.slice(1)) {
      const next = b.native.BinaryOp(0, acc, b.idOf(x), dtypeCode(xs[0]!.dtype));
      b.native.Free(acc);
      acc = next;
    }
    return b.wrap(acc, xs[0]!.dtype);
  },
  Sum: reduce(REDUCE.Sum, 'axis'),
  Mean: reduce(REDUCE.Mean, 'axis'),
  Max: reduce(REDUCE.Max, 'reductionIndices'),
  Min: reduce(REDUCE.Min, 'axis'),
  Prod: reduce(REDUCE.Prod, 'axis'),
  Any: reduce(REDUCE.Any, 'axis'),
  All: reduce(REDUCE.All, 'axis'),
  ArgMax: ({ x }, attrs, b) =>
    b.wrap(b.native.ArgMinMax(b.idOf(x!), axesOf(attrs['axis'], x!.shape)[0]!, true), 'int32'),
  ArgMin: ({ x }, attrs, b) =>
    b.wrap(b.native.ArgMinMax(b.idOf(x!), axesOf(attrs['axis'], x!.shape)[0]!, false), 'int32'),
  Cumsum: ({ x }, attrs, b) =>
    b.wrap(
      b.native.Cumsum(b.idOf(x!), num(attrs['axis']), attrs['exclusive'] === true, attrs['reverse'] === true),
      x!.dtype,
    ),
  Softmax: ({ logits }, attrs, b) => {
    const dim = num(attrs['dim'] ?? -1);
    if (dim !== -1 && dim !== logits!.shape.length - 1) throw new Error('Softmax: only the last axis is implemented');
    return b.wrap(b.native.Softmax(b.idOf(logits!)), 'float32');
  },
  BatchMatMul: matMul,
  _FusedMatMul: fused(matMul),
  Conv2D: conv(false),
  DepthwiseConv2dNative: conv(true),
  FusedConv2D: fused(conv(false)),
  FusedDepthwiseConv2D: fused(conv(true)),
  Conv2DBackpropInput: convInput(false),
  DepthwiseConv2dNativeBackpropInput: convInput(true),
  Conv2DBackpropFilter: convFilter(false),
  DepthwiseConv2dNativeBackpropFilter: convFilter(true),
  MaxPool: ({ x }, attrs, b) => {
    const c = poolInfo(x!.shape, attrs);
    return b.wrap(b.native.MaxPool(b.idOf(x!), [c.filterHeight, c.filterWidth], geometry(c)), x!.dtype);
  },
  MaxPoolGrad: ({ dy, input, output }, attrs, b) => {
    const c = poolInfo(input!.shape, attrs);
    const id = b.native.MaxPoolGrad(
      b.idOf(dy!),
      b.idOf(input!),
      b.idOf(output!),
      [c.filterHeight, c.filterWidth],
      geometry(c),
    );
    return b.wrap(id, 'float32');
  },
  AvgPool: ({ x }, attrs, b) => {
    const c = poolInfo(x!.shape, attrs);
    return b.wrap(b.native.AvgPool(b.idOf(x!), [c.filterHeight, c.filterWidth], geometry(c)), x!.dtype);
  },
  AvgPoolGrad: ({ dy, input }, attrs, b) => {
    const c = poolInfo(input!.shape, attrs);
    return b.wrap(
      b.native.AvgPoolGrad(b.idOf(dy!), b.idOf(input!), [c.filterHeight, c.filterWidth], geometry(c)),
      'float32',
    );
  },
  FusedBatchNorm: ({ x, mean, variance, offset, scale }, attrs, b) =>
    b.wrap(
      b.native.BatchNormInfer(
        b.idOf(x!),
        b.idOf(mean!),
        b.idOf(variance!),
        scale ? b.idOf(scale) : -1,
        offset ? b.idOf(offset) : -1,
        num(attrs['varianceEpsilon'] ?? 0.001),
      ),
      'float32',
    ),
};

/** Every kernel of the torch backend, by TensorFlow.js kernel name. */
export function torchKernels(): Record<string, KernelImpl> {
  const out: Record<string, KernelImpl> = { ...shapeKernels, ...mathKernels };
  for (const [name, code] of Object.entries(BINARY)) out[name] = binary(name, code);
  for (const [name, code] of Object.entries(UNARY)) out[name] = unary(name, code);
  return out;
}
