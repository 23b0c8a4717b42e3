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
export async function decodeRgb(input: string | Buffer): Promise<RgbImage> {
  const name = typeof input === 'string' ? input : '(buffer)';
  let decoded;
  try {
    decoded = await sharp(input, { failOn: 'error', limitInputPixels: 268_402_689 })
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new ImageUnreadableError(name, (e as Error).message, { cause: e });
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

/** The val transform: Resize(resize) -> CenterCrop(crop) -> ToTensor -> Normalize, as NHWC floats. */
export async function valTransform(
  input: string | Buffer,
  options: { resize: number; crop: number; color: ColorMode },
): Promise<Float32Array> {
  let img = await decodeRgb(input);
  if (options.color === 'gray') img = toGray3(img);
  const target = resizedSize(img.width, img.height, options.resize);
  const resized = await sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.length), {
    raw: { width: img.width, height: img.height, channels: 3 },
  })
    .resize(target.width, target.height, { kernel: 'linear', fit: 'fill' })
    .raw()
    .toBuffer();
  // torchvision center_crop: top = round((h - crop) / 2), left likewise.
  const top = Math.round((target.height - options.crop) / 2);
  const left = Math.round((target.width - options.crop) / 2);
  return normalizeCrop(resized, target.width, target.height, top, left, options.crop);
}

function normalizeCrop(
  pixels: Uint8Array,
  width: number,
  height: number,
  top: number,
  left: number,
  crop: number,
): Float32Array {
  const out = new Float32Array(crop * crop * 3);
  for (let y = 0; y < crop; y++) {
    const sy = y + top;
    for (let x = 0; x < crop; x++) {
      const sx = x + left;
      for (let c = 0; c < 3; c++) {
        const inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
        const v = inside ? pixels[(sy * width + sx) * 3 + c]! / 255 : 0;
        out[(y * crop + x) * 3 + c] = (v - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]!;
      }
    }
  }
  return out;
}
