/**
 * Float64 references for convolution filter gradients (NHWC input, HWIO filter), written as plain
 * loops: dW[kh, kw, ci, co] = sum over n, oh, ow of x[n, oh*s - pad + kh, ow*s - pad + kw, ci] *
 * dy[n, oh, ow, co]. Fast enough for every shape of the zoo at 224x224 (the inner loop runs over
 * contiguous output channels).
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

export function conv2dFilterGradRef(x: Float32Array, dy: Float32Array, g: ConvGeometry): Float64Array {
  const [n, h, w, cin] = g.x;
  const { k, cout, stride, pad, outH, outW } = g;
  const dw = new Float64Array(k * k * cin * cout);
  for (let b = 0; b < n; b++) {
    for (let oh = 0; oh < outH; oh++) {
      for (let ow = 0; ow < outW; ow++) {
        const dyBase = ((b * outH + oh) * outW + ow) * cout;
        for (let kh = 0; kh < k; kh++) {
          const ih = oh * stride - pad + kh;
          if (ih < 0 || ih >= h) continue;
          for (let kw = 0; kw < k; kw++) {
            const iw = ow * stride - pad + kw;
            if (iw < 0 || iw >= w) continue;
            const xBase = ((b * h + ih) * w + iw) * cin;
            const wBase = (kh * k + kw) * cin * cout;
            for (let ci = 0; ci < cin; ci++) {
              const xv = x[xBase + ci]!;
              const o = wBase + ci * cout;
              for (let co = 0; co < cout; co++) dw[o + co]! += xv * dy[dyBase + co]!;
            }
          }
        }
      }
    }
  }
  return dw;
}

/** Depthwise (multiplier 1): dW[kh, kw, c, 0] = sum of x(tap-shifted)[.., c] * dy[.., c]. */
export function depthwiseFilterGradRef(x: Float32Array, dy: Float32Array, g: ConvGeometry): Float64Array {
  const [n, h, w, c] = g.x;
  const { k, stride, pad, outH, outW } = g;
  const dw = new Float64Array(k * k * c);
  for (let b = 0; b < n; b++) {
    for (let oh = 0; oh < outH; oh++) {
      for (let ow = 0; ow < outW; ow++) {
        const dyBase = ((b * outH + oh) * outW + ow) * c;
        for (let kh = 0; kh < k; kh++) {
          const ih = oh * stride - pad + kh;
          if (ih < 0 || ih >= h) continue;
          for (let kw = 0; kw < k; kw++) {
            const iw = ow * stride - pad + kw;
            if (iw < 0 || iw >= w) continue;
            const xBase = ((b * h + ih) * w + iw) * c;
            const o = (kh * k + kw) * c;
            for (let ch = 0; ch < c; ch++) dw[o + ch]! += x[xBase + ch]! * dy[dyBase + ch]!;
          }
        }
      }
    }
  }
  return dw;
}

/** dX[n, ih, iw, ci] = sum over taps and co of dy[n, oh, ow, co] * W[kh, kw, ci, co]. */
export function conv2dInputGradRef(dy: Float32Array, filter: Float32Array, g: ConvGeometry): Float64Array {
  const [n, h, w, cin] = g.x;
  const { k, cout, stride, pad, outH, outW } = g;
  const dx = new Float64Array(n * h * w * cin);
  for (let b = 0; b < n; b++) {
    for (let oh = 0; oh < outH; oh++) {
      for (let ow = 0; ow < outW; ow++) {
        const dyBase = ((b * outH + oh) * outW + ow) * cout;
        for (let kh = 0; kh < k; kh++) {
          const ih = oh * stride - pad + kh;
          if (ih < 0 || ih >= h) continue;
          for (let kw = 0; kw < k; kw++) {
            const iw = ow * stride - pad + kw;
            if (iw < 0 || iw >= w) continue;
            const xBase = ((b * h + ih) * w + iw) * cin;
            const wBase = (kh * k + kw) * cin * cout;
            for (let ci = 0; ci < cin; ci++) {
              let acc = 0;
              const o = wBase + ci * cout;
              for (let co = 0; co < cout; co++) acc += dy[dyBase + co]! * filter[o + co]!;
              dx[xBase + ci]! += acc;
            }
          }
        }
      }
    }
  }
  return dx;
}
