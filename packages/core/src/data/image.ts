import { LIMITS, limits } from '@ferry/common';
import sharp from 'sharp';
import { ImageUnreadableError } from '../errors.js';

export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

export type ColorMode = 'rgb' | 'gray';

/** Decoded 8-bit pixels, HWC with 3 channels. */
export interface RgbImage {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

/** Decodes any format sharp reads into 8-bit sRGB (alpha dropped, palettes and 16-bit converted). */
export async function decodeRgb(
  input: string | Buffer,
  options: { readonly maxPixels?: number } = {},
): Promise<RgbImage> {
  const name = typeof input === 'string' ? input : '(buffer)';
  const maxPixels = options.maxPixels ?? limits().maxImagePixels;
  let decoded;
  try {
    // failOn 'error': a truncated or corrupt file is an error, not a half-grey image.
    decoded = await sharp(input, { failOn: 'error', limitInputPixels: maxPixels })
      .toColourspace('srgb')
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    const message = (e as Error).message;
    if (/pixel limit/i.test(message))
      throw new ImageUnreadableError(
        name,
        `more than ${maxPixels} pixels; resize it first, or raise ${LIMITS.maxImagePixels.flag} (the limit keeps one image from taking the machine's memory)`,
        { cause: e },
      );
    throw new ImageUnreadableError(name, message, { cause: e });
  }
  const { data, info } = decoded;
  if (info.channels !== 3) throw new ImageUnreadableError(name, `decoded to ${info.channels} channels, expected 3`);
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

/** PIL's convert('L') (ITU-R 601-2 luma, integer arithmetic), replicated to 3 channels. */
export function toGray3(img: RgbImage): RgbImage {
  const out = new Uint8Array(img.data.length);
  for (let i = 0; i < img.data.length; i += 3) {
    // PIL: L = (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16
    const l = (img.data[i]! * 19595 + img.data[i + 1]! * 38470 + img.data[i + 2]! * 7471 + 0x8000) >> 16;
    out[i] = l;
    out[i + 1] = l;
    out[i + 2] = l;
  }
  return { ...img, data: out };
}

/** torchvision Resize(size) output size: the shorter side becomes `size`, the longer is truncated. */
export function resizedSize(width: number, height: number, size: number): { width: number; height: number } {
  if (width <= height) return { width: size, height: Math.trunc((size * height) / width) };
  return { width: Math.trunc((size * width) / height), height: size };
}
