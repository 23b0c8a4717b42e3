import { ImageUnreadableError } from '../errors.js';
import { IMAGENET_MEAN, IMAGENET_STD, decodeRgb, resizedSize, toGray3, type RgbImage } from './image.js';
import { crop, resizeBilinear } from './resample.js';
import { centerCropBox, trainViewParams, type CropBox, type TransformSpec } from './transforms.js';

/** torchvision's Resize of a PIL image: Pillow's bilinear resample, bit for bit (resample.ts). */
function resizeRgb(img: RgbImage, width: number, height: number): RgbImage {
  const out = resizeBilinear({ ...img, channels: 3 }, width, height);
  return { width: out.width, height: out.height, data: out.data };
}

/** torchvision's resized_crop: Pillow's crop, then its resize. */
function extractResize(img: RgbImage, box: CropBox, size: number): RgbImage {
  return resizeRgb(crop({ ...img, channels: 3 }, box.left, box.top, box.width, box.height), size, size);
}

/** HWC uint8 -> normalised float32 for a box of the image (zero-padded outside), optional mirror. */
export function normalise(
  img: RgbImage,
  box: CropBox,
  flip: boolean,
  out: Float32Array = new Float32Array(box.height * box.width * 3),
): Float32Array {
  const m0 = IMAGENET_MEAN[0];
  const m1 = IMAGENET_MEAN[1];
  const m2 = IMAGENET_MEAN[2];
  const s0 = 1 / (255 * IMAGENET_STD[0]);
  const s1 = 1 / (255 * IMAGENET_STD[1]);
  const s2 = 1 / (255 * IMAGENET_STD[2]);
  const d = img.data;
  for (let y = 0; y < box.height; y++) {
    const sy = y + box.top;
    for (let x = 0; x < box.width; x++) {
      const sx = (flip ? box.width - 1 - x : x) + box.left;
      const o = (y * box.width + x) * 3;
      if (sy < 0 || sy >= img.height || sx < 0 || sx >= img.width) {
        out[o] = -m0 / IMAGENET_STD[0];
        out[o + 1] = -m1 / IMAGENET_STD[1];
        out[o + 2] = -m2 / IMAGENET_STD[2];
        continue;
      }
      const i = (sy * img.width + sx) * 3;
      out[o] = d[i]! * s0 - m0 / IMAGENET_STD[0];
      out[o + 1] = d[i + 1]! * s1 - m1 / IMAGENET_STD[1];
      out[o + 2] = d[i + 2]! * s2 - m2 / IMAGENET_STD[2];
    }
  }
  return out;
}

/**
 * One image through a transform: decode (any format, 8-bit sRGB), PIL-exact grayscale when asked,
 * Resize, then CenterCrop (val) or RandomResizedCrop + flip drawn from `seed` (train); normalised
 * NHWC floats. Throws ImageUnreadableError for files that cannot be decoded.
 */
export async function transformImage(file: string | Buffer, spec: TransformSpec, seed: number): Promise<Float32Array> {
  let img = await decodeRgb(file);
  if (img.width < 1 || img.height < 1) throw new ImageUnreadableError(String(file), 'image has no pixels');
  if (spec.color === 'gray') img = toGray3(img);
  const target = resizedSize(img.width, img.height, spec.resize);
  const resized = resizeRgb(img, target.width, target.height);
  if (spec.kind === 'val') return normalise(resized, centerCropBox(resized.width, resized.height, spec.crop), false);
  const { box, flip } = trainViewParams(resized.width, resized.height, spec, seed);
  const cropped = extractResize(resized, box, spec.crop);
  return normalise(cropped, { top: 0, left: 0, width: spec.crop, height: spec.crop }, flip);
}
