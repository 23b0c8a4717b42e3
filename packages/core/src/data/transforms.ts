import { Rng } from '../util/rng.js';
import type { ColorMode } from './image.js';

/** A serialisable description of a torchvision transform pipeline (sent to decode workers). */
export interface TransformSpec {
  /** `val`: Resize + CenterCrop. `train`: Resize + RandomResizedCrop + RandomHorizontalFlip. */
  readonly kind: 'val' | 'train';
  /** Resize(resize): the shorter side becomes this many pixels. */
  readonly resize: number;
  /** Output side (CenterCrop / RandomResizedCrop size). */
  readonly crop: number;
  readonly color: ColorMode;
  /** RandomResizedCrop area scale range. */
  readonly scale: readonly [number, number];
  /** RandomResizedCrop aspect-ratio range. */
  readonly ratio: readonly [number, number];
  /** RandomHorizontalFlip with p = 0.5. */
  readonly flip: boolean;
}

/** The study's transforms at `crop` (224 by default; Resize scales as 256/224). */
export function studyTransforms(crop = 224, color: ColorMode = 'rgb'): { train: TransformSpec; val: TransformSpec } {
  const resize = Math.round((crop * 256) / 224);
  const base = { resize, crop, color, scale: [0.08, 1] as const, ratio: [3 / 4, 4 / 3] as const };
  return { train: { ...base, kind: 'train', flip: true }, val: { ...base, kind: 'val', flip: false } };
}

/** Python's round(): half to even. */
export function pyRound(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export interface CropBox {
  readonly top: number;
  readonly left: number;
  readonly height: number;
  readonly width: number;
}

/** torchvision CenterCrop offsets: round((size - crop) / 2). */
export function centerCropBox(width: number, height: number, crop: number): CropBox {
  return { top: pyRound((height - crop) / 2), left: pyRound((width - crop) / 2), height: crop, width: crop };
}

/**
 * torchvision RandomResizedCrop.get_params: up to 10 tries of a random area and log-uniform aspect
 * ratio that fits, then the fallback (a central crop clamped to the ratio range).
 */
export function randomResizedCropBox(
  width: number,
  height: number,
  rng: Rng,
  scale: readonly [number, number],
  ratio: readonly [number, number],
): CropBox {
  const area = width * height;
  const logRatio = [Math.log(ratio[0]), Math.log(ratio[1])] as const;
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logRatio[0], logRatio[1]));
    const w = pyRound(Math.sqrt(target * aspect));
    const h = pyRound(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      return { top: rng.int(height - h + 1), left: rng.int(width - w + 1), height: h, width: w };
    }
  }
  const inRatio = width / height;
  let w: number;
  let h: number;
  if (inRatio < Math.min(...ratio)) {
    w = width;
    h = pyRound(w / Math.min(...ratio));
  } else if (inRatio > Math.max(...ratio)) {
    h = height;
    w = pyRound(h * Math.max(...ratio));
  } else {
    w = width;
    h = height;
  }
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), height: h, width: w };
}

/** The random choices of one training view of one image, drawn from its own seed. */
export function trainViewParams(
  width: number,
  height: number,
  spec: TransformSpec,
  seed: number,
): { box: CropBox; flip: boolean } {
  const rng = Rng.fromSeed(seed);
  const box = randomResizedCropBox(width, height, rng, spec.scale, spec.ratio);
  const flip = spec.flip && rng.next() < 0.5;
  return { box, flip };
}
