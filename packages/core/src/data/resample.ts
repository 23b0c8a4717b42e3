/**
 * torchvision's Resize on a PIL image is Pillow's `Image.resize(size, BILINEAR)`: a separable,
 * antialiased triangle filter (its support widened by the scale when shrinking), coefficients in
 * 22-bit fixed point, each pass rounded to 8 bits. This is that algorithm, written from Pillow's
 * `libImaging/Resample.c`, so ferry's pixels are Pillow's bit for bit (packages/core/test/data.test.ts compares
 * them with Pillow itself). Hand-written because no library has that property: libvips' linear
 * kernel (sharp) differs from Pillow by up to 6 levels on noisy images, which moves every input a
 * network sees away from the study's.
 */

/**
 * Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2, so that a sum of 8-bit values times
 * weights summing to 2^22 stays an int32 (the loops below use int32 arithmetic, as Pillow's C).
 */
const PRECISION_BITS = 22;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

/** One axis's filter: for output index i, its first input index, tap count and fixed-point weights. */
interface AxisCoefficients {
  readonly first: Int32Array;
  readonly taps: Int32Array;
  /** [outSize * kernelSize] weights in fixed point; row i holds taps[i] weights. */
  readonly weights: Int32Array;
  readonly kernelSize: number;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter over [0, inSize). */
function axisCoefficients(inSize: number, outSize: number): AxisCoefficients {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 1 * filterScale;
  const ss = 1 / filterScale;
  const kernelSize = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outSize);
  const taps = new Int32Array(outSize);
  const weights = new Int32Array(outSize * kernelSize);
  const k = new Float64Array(kernelSize);
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    // C's (int) truncates toward zero; the values here are >= -0.5, and Pillow clamps below at 0.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let sum = 0;
    for (let x = 0; x < xmax; x++) {
      // Pillow multiplies by ss = 1.0 / filterscale (not a division: the last bit can differ).
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      k[x] = t < 1 ? 1 - t : 0;
      sum += k[x]!;
    }
    for (let x = 0; x < xmax; x++) {
      const w = sum !== 0 ? k[x]! / sum : k[x]!;
      weights[i * kernelSize + x] = Math.trunc(w < 0 ? -0.5 + w * ONE : 0.5 + w * ONE);
    }
    first[i] = xmin;
    taps[i] = xmax;
  }
  return { first, taps, weights, kernelSize };
}

/** Pillow's clip8: a fixed-point sum back to 0..255. */
function clip8(v: number): number {
  if (v >= ONE * 256) return 255;
  if (v <= 0) return 0;
  // v < 2^30: an int32, so the shift is C's.
  return v >> PRECISION_BITS;
}

/** An interleaved 8-bit image (HWC). */
export interface Pixels {
  readonly width: number;
  readonly height: number;
  readonly channels: number;
  readonly data: Uint8Array;
}

/** The horizontal pass over rows [row0, row0 + rows) of `src`. */
function horizontal(src: Pixels, outWidth: number, row0: number, rows: number): Pixels {
  const { first, taps, weights, kernelSize } = coefficientsOf(src.width, outWidth);
  const { channels, data } = src;
  const out = new Uint8Array(outWidth * rows * channels);
  const acc = new Int32Array(channels);
  for (let y = 0; y < rows; y++) {
    const inRow = (y + row0) * src.width * channels;
    for (let x = 0; x < outWidth; x++) {
      const n = taps[x]!;
      const w0 = x * kernelSize;
      let p = inRow + first[x]! * channels;
      const o = (y * outWidth + x) * channels;
      if (channels === 3) {
        // The common case, with the accumulators in registers.
        let [r, g, b] = [HALF, HALF, HALF];
        for (let t = 0; t < n; t++, p += 3) {
          const w = weights[w0 + t]!;
          r = (r + data[p]! * w) | 0;
          g = (g + data[p + 1]! * w) | 0;
          b = (b + data[p + 2]! * w) | 0;
        }
        out[o] = clip8(r);
        out[o + 1] = clip8(g);
        out[o + 2] = clip8(b);
        continue;
      }
      acc.fill(HALF);
      for (let t = 0; t < n; t++) {
        const w = weights[w0 + t]!;
        for (let ch = 0; ch < channels; ch++) acc[ch] = (acc[ch]! + data[p++]! * w) | 0;
      }
      for (let ch = 0; ch < channels; ch++) out[o + ch] = clip8(acc[ch]!);
    }
  }
  return { width: outWidth, height: rows, channels, data: out };
}

/** The vertical pass; `shift` is subtracted from every first row (rows above it were never made). */
function vertical(src: Pixels, c: AxisCoefficients, outHeight: number, shift: number): Pixels {
  const { width, channels, data } = src;
  const stride = width * channels;
  const out = new Uint8Array(outHeight * stride);
  const acc = new Int32Array(stride);
  for (let y = 0; y < outHeight; y++) {
    const firstRow = c.first[y]! - shift;
    const w0 = y * c.kernelSize;
    acc.fill(HALF);
    // Row by row: each input row is read once, contiguously, for every output value of the row.
    for (let t = 0, n = c.taps[y]!; t < n; t++) {
      const w = c.weights[w0 + t]!;
      const base = (firstRow + t) * stride;
      for (let i = 0; i < stride; i++) acc[i] = (acc[i]! + data[base + i]! * w) | 0;
    }
    const o = y * stride;
    for (let i = 0; i < stride; i++) out[o + i] = clip8(acc[i]!);
  }
  return { width, height: outHeight, channels, data: out };
}

const cache = new Map<string, AxisCoefficients>();

/** Coefficients are the same for every image of a size: kept for the most recent 64 size pairs. */
function coefficientsOf(inSize: number, outSize: number): AxisCoefficients {
  const key = `${inSize}>${outSize}`;
  let c = cache.get(key);
  if (!c) {
    c = axisCoefficients(inSize, outSize);
    if (cache.size >= 64) cache.delete(cache.keys().next().value!);
    cache.set(key, c);
  }
  return c;
}

/**
 * Pillow's `im.resize((width, height), Image.BILINEAR)` (ImagingResampleInner): the horizontal pass
 * first, over only the rows the vertical pass reads, then the vertical pass; a pass whose size does
 * not change is skipped.
 */
export function resizeBilinear(src: Pixels, width: number, height: number): Pixels {
  if (width < 1 || height < 1) throw new RangeError(`resize to ${width}x${height}`);
  const needHorizontal = width !== src.width;
  const needVertical = height !== src.height;
  if (!needHorizontal && !needVertical) return src;
  const v = coefficientsOf(src.height, height);
  if (!needHorizontal) return vertical(src, v, height, 0);
  const firstRow = v.first[0]!;
  const lastRow = v.first[height - 1]! + v.taps[height - 1]!;
  const h = horizontal(src, width, needVertical ? firstRow : 0, needVertical ? lastRow - firstRow : src.height);
  return needVertical ? vertical(h, v, height, firstRow) : h;
}

/** Pillow's `im.crop((left, top, left + width, top + height))` inside the image. */
export function crop(src: Pixels, left: number, top: number, width: number, height: number): Pixels {
  const { channels } = src;
  const out = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++) {
    const from = ((top + y) * src.width + left) * channels;
    out.set(src.data.subarray(from, from + width * channels), y * width * channels);
  }
  return { width, height, channels, data: out };
}
