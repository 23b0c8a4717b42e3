import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { Rng } from '@ferry/core';

/** A photo-like RGB image: smooth gradients, a few blobs, fine noise (so JPEG has real work). */
export function photoPixels(width: number, height: number, seed: number): Buffer {
  const rng = Rng.fromSeed(seed);
  const blobs = Array.from({ length: 5 }, () => ({
    x: rng.uniform(0, width),
    y: rng.uniform(0, height),
    r: rng.uniform(0.1, 0.4) * Math.min(width, height),
    c: [rng.int(256), rng.int(256), rng.int(256)],
  }));
  const buf = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      let c = [(x / width) * 200 + 20, (y / height) * 180 + 30, ((x + y) / (width + height)) * 160 + 40];
      for (const b of blobs)
        if ((x - b.x) ** 2 + (y - b.y) ** 2 < b.r ** 2) c = b.c.map((v, i) => 0.7 * v + 0.3 * c[i]!);
      for (let ch = 0; ch < 3; ch++)
        buf[(y * width + x) * 3 + ch] = Math.max(0, Math.min(255, Math.round(c[ch]! + rng.normal() * 6)));
    }
  return buf;
}

export async function writeJpeg(file: string, width: number, height: number, seed: number): Promise<void> {
  mkdirSync(path.dirname(file), { recursive: true });
  await sharp(photoPixels(width, height, seed), { raw: { width, height, channels: 3 } })
    .jpeg({ quality: 90 })
    .toFile(file);
}

/** Every kind of awkward file the data pipeline must survive, keyed by what it is. */
export async function writeAwkwardFiles(dir: string): Promise<Record<string, { file: string; readable: boolean }>> {
  mkdirSync(dir, { recursive: true });
  const p = (n: string): string => path.join(dir, n);
  const raw = (w: number, h: number, seed: number) =>
    sharp(photoPixels(w, h, seed), { raw: { width: w, height: h, channels: 3 } });
  const good = await raw(120, 90, 1).jpeg().toBuffer();
  writeFileSync(p('truncated.jpg'), good.subarray(0, Math.floor(good.length / 2)));
  writeFileSync(p('zero.jpg'), Buffer.alloc(0));
  writeFileSync(p('text.jpg'), 'this is not a JPEG, it is a text file\n');
  await raw(80, 60, 2).toColourspace('cmyk').jpeg().toFile(p('cmyk.jpg'));
  await raw(80, 60, 3).toColourspace('rgb16').png().toFile(p('16bit.png'));
  await raw(80, 60, 3).png().toFile(p('8bit.png')); // the same picture in 8 bits, to compare with
  await raw(80, 60, 4).ensureAlpha(0.5).png().toFile(p('rgba.png'));
  await raw(80, 60, 5).png({ palette: true, colours: 16 }).toFile(p('palette.png'));
  await raw(80, 60, 6).webp().toFile(p('image.WEBP'));
  await sharp({ create: { width: 10_000, height: 5_000, channels: 3, background: { r: 40, g: 120, b: 200 } } })
    .jpeg()
    .toFile(p('50mp.jpg'));
  return {
    truncated: { file: p('truncated.jpg'), readable: false },
    zero: { file: p('zero.jpg'), readable: false },
    text: { file: p('text.jpg'), readable: false },
    cmyk: { file: p('cmyk.jpg'), readable: true },
    png16: { file: p('16bit.png'), readable: true },
    png8: { file: p('8bit.png'), readable: true },
    rgba: { file: p('rgba.png'), readable: true },
    palette: { file: p('palette.png'), readable: true },
    webp: { file: p('image.WEBP'), readable: true },
    big: { file: p('50mp.jpg'), readable: true },
  };
}
