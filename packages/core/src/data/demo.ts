import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { Rng } from '../util/rng.js';

type Shape = 'circle' | 'square' | 'triangle' | 'ring';
type Colour = readonly [number, number, number];

/**
 * The offline demo dataset: four classes, {circle, square} x {red, green}, where the red and the
 * green have the same luma (PIL's L), so grayscale loses half of what tells the classes apart --
 * the study's "gray transfers worse" in miniature. Noisy backgrounds, random sizes and positions.
 */
export const DEMO_CLASSES = ['green_circle', 'green_square', 'red_circle', 'red_square'] as const;

/**
 * The demo's source domain, for pretraining before transfer: eight classes, {circle, ring, square,
 * triangle} x {blue, yellow}: related to the target (shapes on the same kind of background) but
 * different (other colours, two more shapes, twice the classes).
 */
export const DEMO_SOURCE_CLASSES = [
  'blue_circle',
  'blue_ring',
  'blue_square',
  'blue_triangle',
  'yellow_circle',
  'yellow_ring',
  'yellow_square',
  'yellow_triangle',
] as const;

// Equal luma (0.299 R + 0.587 G + 0.114 B = 104.8 for both), and no channel near 0 or 255, so the
// noise is never clipped (clipping would leave a texture that tells the colours apart in gray).
const RED: Colour = [210, 60, 60];
const GREEN: Colour = [60, 140, 41];
const BLUE: Colour = [60, 90, 200];
const YELLOW: Colour = [205, 185, 60];
const COLOURS: Readonly<Record<string, Colour>> = { red: RED, green: GREEN, blue: BLUE, yellow: YELLOW };

export interface DemoOptions {
  readonly trainPerClass: number;
  readonly valPerClass: number;
  readonly size: number;
  readonly seed: number;
}

export const DEMO_DEFAULTS: DemoOptions = { trainPerClass: 100, valPerClass: 25, size: 64, seed: 0 };

function inside(shape: Shape, dx: number, dy: number, r: number): boolean {
  switch (shape) {
    case 'circle':
      return dx * dx + dy * dy < r * r;
    case 'ring': {
      const d2 = dx * dx + dy * dy;
      return d2 < r * r && d2 > (0.55 * r) ** 2;
    }
    case 'square':
      return Math.abs(dx) < r * 0.89 && Math.abs(dy) < r * 0.89;
    case 'triangle':
      // Apex up, base at 0.8 r below the centre; half-width grows linearly from the apex.
      return dy > -r && dy < 0.8 * r && Math.abs(dx) < ((dy + r) / (1.8 * r)) * r;
  }
}

function drawImage(shape: Shape, colour: Colour, size: number, rng: Rng): Buffer {
  const buf = Buffer.alloc(size * size * 3);
  const r = rng.uniform(0.25, 0.4) * size;
  const cx = rng.uniform(r, size - r);
  const cy = rng.uniform(r, size - r);
  const bg = [rng.uniform(150, 210), rng.uniform(150, 210), rng.uniform(150, 210)];
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const isShape = inside(shape, x - cx, y - cy, r);
      for (let c = 0; c < 3; c++) {
        const v = (isShape ? colour[c]! : bg[c]!) + rng.normal() * 12;
        buf[(y * size + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  return buf;
}

async function writeClasses(
  dest: string,
  classes: readonly string[],
  options: Partial<DemoOptions>,
): Promise<{ images: number }> {
  const o = { ...DEMO_DEFAULTS, ...options };
  const rng = Rng.fromSeed(o.seed);
  let images = 0;
  for (const [split, count] of [
    ['train', o.trainPerClass],
    ['val', o.valPerClass],
  ] as const) {
    for (const cls of classes) {
      const [colourName, shape] = cls.split('_') as [string, Shape];
      const dir = path.join(dest, split, cls);
      await mkdir(dir, { recursive: true });
      for (let i = 0; i < count; i++) {
        const raw = drawImage(shape, COLOURS[colourName]!, o.size, rng);
        const png = await sharp(raw, { raw: { width: o.size, height: o.size, channels: 3 } })
          .png()
          .toBuffer();
        await writeFile(path.join(dir, `${String(i).padStart(4, '0')}.png`), png);
        images++;
      }
    }
  }
  return { images };
}

/** Writes DEST/train/<class>/*.png and DEST/val/<class>/*.png; deterministic for a seed. */
export async function writeDemoDataset(dest: string, options: Partial<DemoOptions> = {}): Promise<{ images: number }> {
  return writeClasses(dest, DEMO_CLASSES, options);
}

/** The source domain (DEMO_SOURCE_CLASSES) in the same layout, with images of its own (seed + 1). */
export async function writeDemoSourceDataset(
  dest: string,
  options: Partial<DemoOptions> = {},
): Promise<{ images: number }> {
  return writeClasses(dest, DEMO_SOURCE_CLASSES, { ...options, seed: (options.seed ?? DEMO_DEFAULTS.seed) + 1 });
}
