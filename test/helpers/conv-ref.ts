/**
 * Float64 references for convolution gradients (NHWC input, HWIO filter), written as plain loops
 * over the definition y[n, oh, ow, co] = sum of x[n, oh*s - pad + kh, ow*s - pad + kw, ci] *
 * W[kh, kw, ci, co]. Fast enough for every shape of the zoo at 224x224 (the inner loops run over
 * contiguous channels).
 *
 * The `...Bounded` variants also return what bounds float32's error on each element: the sum of the
 * absolute values of its terms and the longest dot product's length (see `dotBoundRatio`).
 */
export interface ConvGeometry {
  readonly x: readonly [number, number, number, number];
  readonly k: number;
  readonly cout: number;
  readonly stride: number;
  readonly pad: number;
  readonly outH: number;
  readonly outW: number;
}

/**
 * Calls `visit` for every (output position, filter tap) pair that reads a pixel inside the input,
 * with the offsets of that pixel in x, of that output position in dy, and the tap's index.
 */
function forEachTap(
  g: ConvGeometry,
  channelsOut: number,
  visit: (xBase: number, dyBase: number, tap: number) => void,
): void {
  const [n, h, w, cin] = g.x;
  const { k, stride, pad, outH, outW } = g;
  for (let b = 0; b < n; b++) {
    for (let oh = 0; oh < outH; oh++) {
      for (let ow = 0; ow < outW; ow++) {
        const dyBase = ((b * outH + oh) * outW + ow) * channelsOut;
        for (let kh = 0; kh < k; kh++) {
          const ih = oh * stride - pad + kh;
          if (ih < 0 || ih >= h) continue;
          for (let kw = 0; kw < k; kw++) {
            const iw = ow * stride - pad + kw;
            if (iw < 0 || iw >= w) continue;
            visit(((b * h + ih) * w + iw) * cin, dyBase, kh * k + kw);
          }
        }
      }
    }
  }
}

/** dW[kh, kw, ci, co] = sum over n, oh, ow of x(tap-shifted)[.., ci] * dy[.., co]. */
export function conv2dFilterGradRef(x: Float32Array, dy: Float32Array, g: ConvGeometry): Float64Array {
  const cin = g.x[3];
  const { k, cout } = g;
  const dw = new Float64Array(k * k * cin * cout);
  forEachTap(g, cout, (xBase, dyBase, tap) => {
    for (let ci = 0; ci < cin; ci++) {
      const xv = x[xBase + ci]!;
      const o = (tap * cin + ci) * cout;
      for (let co = 0; co < cout; co++) dw[o + co]! += xv * dy[dyBase + co]!;
    }
  });
  return dw;
}

/** Depthwise (multiplier 1): dW[kh, kw, c, 0] = sum of x(tap-shifted)[.., c] * dy[.., c]. */
export function depthwiseFilterGradRef(x: Float32Array, dy: Float32Array, g: ConvGeometry): Float64Array {
  const c = g.x[3];
  const dw = new Float64Array(g.k * g.k * c);
  forEachTap(g, c, (xBase, dyBase, tap) => {
    for (let ch = 0; ch < c; ch++) dw[tap * c + ch]! += x[xBase + ch]! * dy[dyBase + ch]!;
  });
  return dw;
}

/** dX[n, ih, iw, ci] = sum over taps and co of dy[n, oh, ow, co] * W[kh, kw, ci, co]. */
export function conv2dInputGradRef(dy: Float32Array, filter: Float32Array, g: ConvGeometry): Float64Array {
  const [n, h, w, cin] = g.x;
  const { cout } = g;
  const dx = new Float64Array(n * h * w * cin);
  forEachTap(g, cout, (xBase, dyBase, tap) => {
    for (let ci = 0; ci < cin; ci++) {
      let acc = 0;
      const o = (tap * cin + ci) * cout;
      for (let co = 0; co < cout; co++) acc += dy[dyBase + co]! * filter[o + co]!;
      dx[xBase + ci]! += acc;
    }
  });
  return dx;
}

/** Depthwise (multiplier 1): dX[n, ih, iw, c] = sum over taps of dy[n, oh, ow, c] * W[kh, kw, c, 0]. */
export function depthwiseInputGradRef(dy: Float32Array, filter: Float32Array, g: ConvGeometry): Float64Array {
  const [n, h, w, c] = g.x;
  const dx = new Float64Array(n * h * w * c);
  forEachTap(g, c, (xBase, dyBase, tap) => {
    for (let ch = 0; ch < c; ch++) dx[xBase + ch]! += dy[dyBase + ch]! * filter[tap * c + ch]!;
  });
  return dx;
}

/** A float64 reference with what bounds float32's error on it. */
export interface Bounded {
  readonly want: Float64Array;
  /** Per element, sum |terms| of its dot product. */
  readonly abs: Float64Array;
  /** The longest dot product's length. */
  readonly terms: number;
}

const absOf = (a: Float32Array): Float32Array => a.map(Math.abs);

/** dW (full or depthwise) with its bound: a sum over every image and output position. */
export function filterGradBounded(x: Float32Array, dy: Float32Array, g: ConvGeometry, depthwise: boolean): Bounded {
  const f = depthwise ? depthwiseFilterGradRef : conv2dFilterGradRef;
  return { want: f(x, dy, g), abs: f(absOf(x), absOf(dy), g), terms: g.x[0] * g.outH * g.outW };
}

/** dX (full or depthwise) with its bound: a sum over the kernel window (and the output channels). */
export function inputGradBounded(dy: Float32Array, w: Float32Array, g: ConvGeometry, depthwise: boolean): Bounded {
  const f = depthwise ? depthwiseInputGradRef : conv2dInputGradRef;
  return { want: f(dy, w, g), abs: f(absOf(dy), absOf(w), g), terms: g.k * g.k * (depthwise ? 1 : g.cout) };
}

/**
 * The worst element's error against the float64 reference, as a share of float32's own bound for a
 * dot product of float32 inputs, whatever the summation order (sequential, pairwise, blocked,
 * im2col + matmul, split and re-added): |fl(sum x_i y_i) - sum x_i y_i| <= gamma_n sum |x_i y_i|,
 * gamma_n = n u / (1 - n u), u = 2^-24, n the number of terms (Higham, Accuracy and Stability of
 * Numerical Algorithms, 3.1). <= 1 passes; an element with no terms must be exactly 0. A misplaced
 * tap, a dropped row or a wrong offset is an error of the order of the terms themselves, a ratio
 * far above 1 (n u is at most 2^-9 here).
 */
export function dotBoundRatio(got: ArrayLike<number>, ref: Bounded): { ratio: number; at: number } {
  if (got.length !== ref.want.length) throw new Error(`${got.length} elements, the reference has ${ref.want.length}`);
  const u = 2 ** -24;
  const gamma = (ref.terms * u) / (1 - ref.terms * u);
  let worst = { ratio: 0, at: -1 };
  for (let i = 0; i < got.length; i++) {
    const ratio = Math.abs(got[i]! - ref.want[i]!) / (gamma * ref.abs[i]! || Number.MIN_VALUE);
    if (ratio > worst.ratio) worst = { ratio, at: i };
  }
  return worst;
}
