import type { ParamSpec } from '../models/layers.js';

/** torch layout -> TF.js layout for one parameter (OIHW -> HWIO, [out,in] -> [in,out]). */
export function torchToTf(spec: ParamSpec, src: Float32Array): Float32Array {
  switch (spec.kind) {
    case 'conv': {
      const [co, ci, kh, kw] = spec.torchShape as [number, number, number, number];
      const out = new Float32Array(src.length);
      for (let o = 0; o < co; o++)
        for (let i = 0; i < ci; i++)
          for (let h = 0; h < kh; h++)
            for (let w = 0; w < kw; w++) out[((h * kw + w) * ci + i) * co + o] = src[((o * ci + i) * kh + h) * kw + w]!;
      return out;
    }
    case 'depthwise': {
      const [c, , kh, kw] = spec.torchShape as [number, number, number, number];
      const out = new Float32Array(src.length);
      for (let o = 0; o < c; o++)
        for (let h = 0; h < kh; h++)
          for (let w = 0; w < kw; w++) out[(h * kw + w) * c + o] = src[(o * kh + h) * kw + w]!;
      return out;
    }
    case 'linear':
      return transpose2d(src, spec.torchShape[0]!, spec.torchShape[1]!);
    default:
      return src;
  }
}

/** TF.js layout -> torch layout (the inverse of torchToTf). */
export function tfToTorch(spec: ParamSpec, src: Float32Array): Float32Array {
  switch (spec.kind) {
    case 'conv': {
      const [co, ci, kh, kw] = spec.torchShape as [number, number, number, number];
      const out = new Float32Array(src.length);
      for (let o = 0; o < co; o++)
        for (let i = 0; i < ci; i++)
          for (let h = 0; h < kh; h++)
            for (let w = 0; w < kw; w++) out[((o * ci + i) * kh + h) * kw + w] = src[((h * kw + w) * ci + i) * co + o]!;
      return out;
    }
    case 'depthwise': {
      const [c, , kh, kw] = spec.torchShape as [number, number, number, number];
      const out = new Float32Array(src.length);
      for (let o = 0; o < c; o++)
        for (let h = 0; h < kh; h++)
          for (let w = 0; w < kw; w++) out[(o * kh + h) * kw + w] = src[(h * kw + w) * c + o]!;
      return out;
    }
    case 'linear':
      return transpose2d(src, spec.torchShape[1]!, spec.torchShape[0]!);
    default:
      return src;
  }
}

/** [rows, cols] -> [cols, rows]. */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
  return out;
}
