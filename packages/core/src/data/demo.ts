import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { Rng } from '../util/rng.js';

/**
 * The offline demo dataset: four classes, {circle, square} x {red, green}, where the red and the
 * green have the same luma (PIL's L), so grayscale loses half of what tells the classes apart --
 * the study's "gray transfers worse" in miniature. Noisy backgrounds, random sizes and positions.
 */
export const DEMO_CLASSES = ['green_circle', 'green_square', 'red_circle', 'red_square'] as const;

// Equal luma (0.299 R + 0.587 G + 0.114 B = 104.8 for both), and no channel near 0 or 255, so the
// noise is never clipped (clipping would leave a texture that tells the colours apart in gray).
const RED: readonly [number, number, number] = [210, 60, 60];
const GREEN: readonly [number, number, number] = [60, 140, 41];

export interface DemoOptions {
  readonly trainPerClass: number;
  readonly valPerClass: number;
  readonly size: number;
  readonly seed: number;
}

export const DEMO_DEFAULTS: DemoOptions = { trainPerClass: 100, valPerClass: 25, size: 64, seed: 0 };

function drawImage(cls: number, size: number, rng: Rng): Buffer {
  const buf = Buffer.alloc(size * size * 3);
  const colour = cls >= 2 ? RED : GREEN;
  const square = cls % 2 === 1;
  const r = rng.uniform(0.25, 0.4) * size;
  const cx = rng.uniform(r, size - r);
  const cy = rng.uniform(r, size - r);
  const bg = [rng.uniform(150, 210), rng.uniform(150, 210), rng.uniform(150, 210)];
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const inside = square ? Math.abs(x - cx) < r * 0.89 && Math.abs(y - cy) < r * 0.89 : (x - cx) ** 2 + (y - cy) ** 2 < r * r;
      for (let c = 0; c < 3; c++) {
        const v = (inside ? colour[c]! : bg[c]!) + rng.normal() * 12;
        buf[(y * size + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  return buf;
}

/** Writes DEST/train/<class>/*.png and DEST/val/<class>/*.png; deterministic for a seed. */
export async function writeDemoDataset(dest: string, options: Partial<DemoOptions> = {}): Promise<{ images: number }> {
  const o = { ...DEMO_DEFAULTS, ...options };
  const rng = Rng.fromSeed(o.seed);
  let images = 0;
  for (const [split, count] of [
    ['train', o.trainPerClass],
    ['val', o.valPerClass],
  ] as const) {
    for (let c = 0; c < DEMO_CLASSES.length; c++) {
      const dir = path.join(dest, split, DEMO_CLASSES[c]!);
      await mkdir(dir, { recursive: true });
      for (let i = 0; i < count; i++) {
        const png = await sharp(drawImage(c, o.size, rng), { raw: { width: o.size, height: o.size, channels: 3 } }).png().toBuffer();
        await writeFile(path.join(dir, `${String(i).padStart(4, '0')}.png`), png);
        images++;
      }
    }
  }
  return { images };
}
