import type { ParamSpec } from '../models/layers.js';

/**
 * Every element's index in the torch layout and in the TF.js layout of a parameter (conv OIHW <->
 * HWIO, depthwise [c,1,kh,kw] <-> [kh,kw,c,1], linear [out,in] <-> [in,out]); false when the two
 * layouts are the same (BatchNorm vectors, biases).
 */
function forEachIndexPair(spec: ParamSpec, visit: (torchIndex: number, tfIndex: number) => void): boolean {
  const [a = 1, b = 1, kh = 1, kw = 1] = spec.torchShape;
  if (spec.kind === 'conv') {
    const [co, ci] = [a, b];
    for (let o = 0; o < co; o++)
      for (let i = 0; i < ci; i++)
        for (let h = 0; h < kh; h++)
          for (let w = 0; w < kw; w++) visit(((o * ci + i) * kh + h) * kw + w, ((h * kw + w) * ci + i) * co + o);
  } else if (spec.kind === 'depthwise') {
    for (let o = 0; o < a; o++)
      for (let h = 0; h < kh; h++) for (let w = 0; w < kw; w++) visit((o * kh + h) * kw + w, (h * kw + w) * a + o);
  } else if (spec.kind === 'linear') {
    for (let o = 0; o < a; o++) for (let i = 0; i < b; i++) visit(o * b + i, i * a + o);
  } else return false;
  return true;
}

/** torch layout -> TF.js layout for one parameter. */
export function torchToTf(spec: ParamSpec, src: Float32Array): Float32Array {
  const out = new Float32Array(src.length);
  return forEachIndexPair(spec, (t, f) => (out[f] = src[t]!)) ? out : src;
}

/** TF.js layout -> torch layout (the inverse of torchToTf). */
export function tfToTorch(spec: ParamSpec, src: Float32Array): Float32Array {
  const out = new Float32Array(src.length);
  return forEachIndexPair(spec, (t, f) => (out[t] = src[f]!)) ? out : src;
}

/** [rows, cols] -> [cols, rows]. */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
  return out;
}
