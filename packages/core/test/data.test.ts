import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { LIMITS } from '@ferry/common';
import {
  DecodePool,
  IMAGENET_MEAN,
  IMAGENET_STD,
  FerryError,
  decodeRgb,
  ImageFolderSource,
  Rng,
  centerCropBox,
  openImageFolder,
  pyRound,
  randomResizedCropBox,
  readNpy,
  stratifiedSplit,
  studyTransforms,
  toGray3,
  transformImage,
  type SkippedFile,
} from '@ferry/core';
import { crop as cropPixels, resizeBilinear } from '@ferry/core/internal';
import { writeAwkwardFiles, writeJpeg } from '../../../test/helpers/images.js';
import { REPO_ROOT } from '../../../test/helpers/torch-ref.js';

const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-data-'));
let pool: DecodePool;
beforeAll(() => {
  pool = new DecodePool(2);
});
afterAll(async () => {
  await pool.close();
});

describe('transform geometry (pure, hand-checked)', () => {
  test('Python rounding is half to even', () => {
    expect([0.5, 1.5, 2.5, -0.5, 2.4, 2.6].map(pyRound)).toEqual([0, 2, 2, -0, 2, 3]);
  });

  test('CenterCrop offsets follow torchvision', () => {
    expect(centerCropBox(341, 256, 224)).toEqual({ top: 16, left: 58, height: 224, width: 224 });
    expect(centerCropBox(256, 256, 224)).toEqual({ top: 16, left: 16, height: 224, width: 224 });
  });

  test('RandomResizedCrop stays inside the image and within the scale and ratio ranges', () => {
    const rng = Rng.fromSeed(3);
    for (let i = 0; i < 500; i++) {
      const b = randomResizedCropBox(300, 200, rng, [0.08, 1], [3 / 4, 4 / 3]);
      expect(b.top).toBeGreaterThanOrEqual(0);
      expect(b.left).toBeGreaterThanOrEqual(0);
      expect(b.top + b.height).toBeLessThanOrEqual(200);
      expect(b.left + b.width).toBeLessThanOrEqual(300);
      expect(b.width * b.height).toBeGreaterThanOrEqual(0.08 * 300 * 200 * 0.9);
    }
  });

  test('RandomResizedCrop falls back to a ratio-clamped central crop when nothing fits', () => {
    // A 1000x10 strip: no crop of scale >= 0.9 with ratio <= 4/3 fits, so the fallback applies.
    const b = randomResizedCropBox(1000, 10, Rng.fromSeed(1), [0.9, 1], [3 / 4, 4 / 3]);
    expect(b).toEqual({ top: 0, left: 493, height: 10, width: 13 });
  });

  test("grayscale is PIL's L: (R*299 + G*587 + B*114) / 1000, rounded, in 3 channels", () => {
    const g = toGray3({ width: 3, height: 1, data: Uint8Array.from([255, 0, 0, 0, 255, 0, 10, 20, 30]) });
    expect([...g.data]).toEqual([76, 76, 76, 150, 150, 150, 18, 18, 18]);
  });

  test('a stratified split is deterministic and takes about the fraction from every class', () => {
    const a = stratifiedSplit([10, 50, 3, 1], 0.2, 7);
    expect(a).toEqual(stratifiedSplit([10, 50, 3, 1], 0.2, 7));
    expect(a.map((v) => v.length)).toEqual([2, 10, 1, 0]);
    expect(stratifiedSplit([10, 50, 3, 1], 0.2, 8)).not.toEqual(a);
  });
});

describe('val transform parity with torchvision + PIL', () => {
  test.each(['rgb', 'gray'] as const)(
    "%s: Resize(256)+CenterCrop(224) of real JPEGs gives Pillow's pixels exactly, normalised to float32's rounding of the float64 value",
    async (color) => {
      const dir = tmp();
      const files = [path.join(dir, 'a.jpg'), path.join(dir, 'b.jpg'), path.join(dir, 'c.jpg')];
      await writeJpeg(files[0]!, 500, 375, 1);
      await writeJpeg(files[1]!, 333, 500, 2);
      await writeJpeg(files[2]!, 640, 427, 3);
      const out = path.join(dir, 'ref.npy');
      execFileSync('/usr/bin/python3', [
        path.join(REPO_ROOT, 'test/fixtures/pil_transform.py'),
        out,
        '256',
        '224',
        color,
        ...files,
      ]);
      // Pillow's uint8 pixels after Resize and CenterCrop (the same libjpeg decode as sharp's).
      const want = readNpy(readFileSync(out));
      expect(want.shape).toEqual([3, 224, 224, 3]);
      const spec = studyTransforms(224, color).val;
      const per = 224 * 224 * 3;
      let levelsOff = 0;
      let worstUlps = 0;
      for (let i = 0; i < files.length; i++) {
        const got = await transformImage(files[i]!, spec, 0);
        for (let k = 0; k < per; k++) {
          const c = k % 3;
          const level = want.data[i * per + k]!;
          // The float64 value of Normalize(ToTensor(level)); ferry's float32 must be its rounding:
          // within half a unit in the last place, 2^-24 of it (a normal float32).
          const exact = (level / 255 - IMAGENET_MEAN[c]!) / IMAGENET_STD[c]!;
          const ulps = Math.abs(got[k]! - exact) / (2 ** -24 * Math.max(Math.abs(exact), 2 ** -126));
          worstUlps = Math.max(worstUlps, ulps);
          if (Math.round((got[k]! * IMAGENET_STD[c]! + IMAGENET_MEAN[c]!) * 255) !== level) levelsOff++;
        }
      }
      console.log(JSON.stringify({ test: 'val-transform-parity', color, levelsOff, worstHalfUlps: worstUlps }));
      expect(levelsOff).toBe(0);
      expect(worstUlps).toBeLessThanOrEqual(1);
    },
  );

  test("Pillow's bilinear resize, bit for bit: shrinking, enlarging, one axis, odd sizes, one-pixel images, crops (torchvision's resized_crop)", () => {
    const dir = tmp();
    const rng = Rng.fromSeed(17);
    for (const [w, h, c] of [
      [97, 61, 3],
      [40, 300, 1],
      [1, 1, 3],
      [7, 1, 1],
    ] as const) {
      // Noise on a gradient: every level and sharp edges, where resamplers differ most.
      const data = Uint8Array.from({ length: w * h * c }, (_, i) =>
        Math.min(255, Math.max(0, Math.round(((i / c) % w) * 2 + rng.normal() * 60 + 40))),
      );
      const cases: number[][] = [
        [31, 17],
        [w * 3 + 1, h * 2 - 1],
        [w, Math.max(1, h >> 2)],
        [Math.max(1, w >> 1), h],
        [1, 1],
        [w, h],
        [5, 3],
        [3, 8],
        // Crops (torchvision's resized_crop) where the image has room for them.
        ...(w > 10 && h > 10
          ? [
              [24, 24, 3, 5, Math.min(w - 3, 50), Math.min(h - 5, 40)],
              [64, 64, 1, 2, 9, 13],
            ]
          : []),
      ];
      writeFileSync(path.join(dir, 'in.raw'), data);
      writeFileSync(path.join(dir, 'cases.json'), JSON.stringify(cases));
      execFileSync('/usr/bin/python3', [
        path.join(REPO_ROOT, 'test/fixtures/pil_resize.py'),
        path.join(dir, 'in.raw'),
        String(w),
        String(h),
        String(c),
        path.join(dir, 'cases.json'),
        path.join(dir, 'out.raw'),
      ]);
      const want = readFileSync(path.join(dir, 'out.raw'));
      let at = 0;
      for (const cs of cases) {
        const src = { width: w, height: h, channels: c, data };
        const from = cs.length === 6 ? cropPixels(src, cs[2]!, cs[3]!, cs[4]!, cs[5]!) : src;
        const got = resizeBilinear(from, cs[0]!, cs[1]!);
        const n = cs[0]! * cs[1]! * c;
        expect(Buffer.from(got.data).equals(want.subarray(at, at + n)), `${w}x${h}x${c} -> ${cs.join(',')}`).toBe(true);
        at += n;
      }
      expect(at).toBe(want.length);
    }
  });
});

describe('bad input never kills a run', () => {
  test('awkward files are decoded correctly or skipped with the file and the reason', async () => {
    const files = await writeAwkwardFiles(tmp());
    const spec = studyTransforms(64).val;
    for (const [what, { file, readable }] of Object.entries(files)) {
      const r = await pool.run(file, spec, 0);
      expect(r.ok, `${what}: ${r.ok ? '' : r.reason}`).toBe(readable);
      if (r.ok) {
        expect(r.data.length).toBe(64 * 64 * 3);
        expect(r.data.every(Number.isFinite)).toBe(true);
      } else expect(r.reason.length).toBeGreaterThan(3);
    }
    // A 16-bit PNG decodes to the same picture as its 8-bit self, not to garbage.
    const png16 = await pool.run(files['png16']!.file, spec, 0);
    const png8 = await pool.run(files['png8']!.file, spec, 0);
    if (!png16.ok || !png8.ok) throw new Error('both PNGs must decode');
    // 8-bit values stored as 16 bits (v * 257) come back to v exactly; allow one 8-bit level
    // (1 / 255 / std, at most 0.0175 in normalised units) for a converter that rounds differently.
    let maxDiff = 0;
    for (let k = 0; k < png8.data.length; k++) maxDiff = Math.max(maxDiff, Math.abs(png16.data[k]! - png8.data[k]!));
    expect(maxDiff).toBeLessThanOrEqual(1 / 255 / 0.224 + 1e-6);
  });

  test('an image declaring more pixels than the limit is refused from its header, before any pixel is decoded', async () => {
    // A PNG declaring 16000 x 16000 RGB in under 100 bytes: 768 MB if decoded.
    const crc = (b: Buffer): number => {
      let c = ~0;
      for (const byte of b) {
        c ^= byte;
        for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
      }
      return ~c >>> 0;
    };
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(16000, 0);
    ihdr.writeUInt32BE(16000, 4);
    ihdr[8] = 8;
    ihdr[9] = 2;
    const body = Buffer.concat([Buffer.from('IHDR'), ihdr]);
    const crcBuf = Buffer.alloc(4);
    crcBuf.writeUInt32BE(crc(body));
    const len = Buffer.alloc(4);
    len.writeUInt32BE(13);
    const chunk = (type: string, data: Buffer): Buffer => {
      const b = Buffer.concat([Buffer.from(type), data]);
      const l = Buffer.alloc(4);
      l.writeUInt32BE(data.length);
      const c = Buffer.alloc(4);
      c.writeUInt32BE(crc(b));
      return Buffer.concat([l, b, c]);
    };
    // A few bytes of image data: the decoder needs the stream to start, the limit stops it first.
    const png = Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      len,
      body,
      crcBuf,
      chunk('IDAT', deflateSync(Buffer.alloc(64))),
      chunk('IEND', Buffer.alloc(0)),
    ]);
    const rss0 = process.memoryUsage().rss;
    const e = await decodeRgb(png).catch((x: unknown) => x as FerryError);
    expect(e).toBeInstanceOf(FerryError);
    expect((e as FerryError).code).toBe('FERRY_ERR_IMAGE_UNREADABLE');
    expect((e as FerryError).message).toContain(`more than ${LIMITS.maxImagePixels.default} pixels; resize it first`);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(100 << 20);
    // The limit is an option: a small one refuses a small image the same way.
    const small = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#808080' } })
      .png()
      .toBuffer();
    expect((await decodeRgb(small)).width).toBe(64);
    await expect(decodeRgb(small, { maxPixels: 1000 })).rejects.toThrow('more than 1000 pixels');
  });

  test('a split with unreadable files trains on the rest and reports each skipped file once', async () => {
    const root = tmp();
    for (const split of ['train', 'val'])
      for (const c of ['ants', 'bees'])
        for (let i = 0; i < 3; i++) await writeJpeg(path.join(root, split, c, `${i}.jpg`), 50, 40, i);
    writeFileSync(path.join(root, 'train', 'ants', 'broken.jpg'), 'nope');
    writeFileSync(path.join(root, 'train', 'bees', 'empty.png'), '');
    writeFileSync(path.join(root, 'train', 'bees', 'notes.txt'), 'ignored: not an image extension');
    const folder = await openImageFolder(root);
    expect(folder.classes).toEqual(['ants', 'bees']);
    expect(folder.train).toHaveLength(8);
    const warnings: SkippedFile[] = [];
    const source = new ImageFolderSource({
      samples: folder.train,
      classNames: folder.classes,
      spec: studyTransforms(32).train,
      batchSize: 3,
      shuffle: true,
      pool,
      onSkip: (s) => warnings.push(s),
    });
    for (let epoch = 0; epoch < 2; epoch++) {
      let n = 0;
      for await (const b of source.batches(epoch, 1)) n += b.labels.length;
      expect(n).toBe(6);
    }
    expect(warnings.map((w) => path.basename(w.file)).sort()).toEqual(['broken.jpg', 'empty.png']);
    expect(source.skipped).toHaveLength(2);
    expect(source.size).toBe(6);
  });

  test('same seed, same batches; another epoch, other augmentations', async () => {
    const root = tmp();
    for (const split of ['train', 'val'])
      for (const c of ['a', 'b'])
        for (let i = 0; i < 4; i++) await writeJpeg(path.join(root, split, c, `${i}.jpg`), 60, 45, i + 10);
    const folder = await openImageFolder(root);
    const mk = (threads: DecodePool) =>
      new ImageFolderSource({
        samples: folder.train,
        classNames: folder.classes,
        spec: studyTransforms(32).train,
        batchSize: 4,
        shuffle: true,
        pool: threads,
      });
    const collect = async (s: ImageFolderSource, epoch: number) => {
      const out: number[] = [];
      for await (const b of s.batches(epoch, 5)) out.push(...b.labels, ...b.x.subarray(0, 50));
      return out;
    };
    const onePool = new DecodePool(1);
    const a = await collect(mk(pool), 0);
    expect(await collect(mk(onePool), 0)).toEqual(a);
    expect(await collect(mk(pool), 1)).not.toEqual(a);
    await onePool.close();
  });
});

describe('dataset structure errors fail before training, saying what to fix', () => {
  const err = async (p: Promise<unknown>): Promise<FerryError> => {
    try {
      await p;
    } catch (e) {
      return e as FerryError;
    }
    throw new Error('expected an error');
  };

  test('missing val/, empty class folder, differing classes, no images, missing folder', async () => {
    const root = tmp();
    await writeJpeg(path.join(root, 'train', 'a', '1.jpg'), 20, 20, 1);
    let e = await err(openImageFolder(root));
    expect(e.code).toBe('FERRY_ERR_DATASET');
    expect(e.message).toContain('no val/');

    await writeJpeg(path.join(root, 'val', 'b', '1.jpg'), 20, 20, 1);
    e = await err(openImageFolder(root));
    expect(e.message).toMatch(/only in train: a; only in val: b/);

    mkdirSync(path.join(root, 'train', 'b'));
    mkdirSync(path.join(root, 'val', 'a'));
    e = await err(openImageFolder(root));
    expect(e.message).toMatch(/"b" .* holds no images/);

    const flat = tmp();
    mkdirSync(path.join(flat, 'x'));
    e = await err(openImageFolder(flat, { valFraction: 0.2 }));
    expect(e.message).toContain('holds no images');

    e = await err(openImageFolder(path.join(flat, 'nope')));
    expect(e.message).toContain('does not exist');
    rmSync(root, { recursive: true });
  });

  test('symbolic links inside class folders are not followed, and they are named rather than skipped silently', async () => {
    const root = tmp();
    const outside = tmp();
    await writeJpeg(path.join(outside, 'elsewhere.jpg'), 16, 16, 1);
    mkdirSync(path.join(outside, 'more'));
    for (const split of ['train', 'val'])
      for (const c of ['a', 'b']) await writeJpeg(path.join(root, split, c, '0.jpg'), 16, 16, 2);
    symlinkSync(path.join(outside, 'elsewhere.jpg'), path.join(root, 'train', 'a', 'link.jpg'));
    symlinkSync(path.join(outside, 'more'), path.join(root, 'train', 'b', 'linked-dir'));
    const f = await openImageFolder(root);
    expect(f.train.map((x) => path.relative(root, x.file)).sort()).toEqual([
      path.join('train', 'a', '0.jpg'),
      path.join('train', 'b', '0.jpg'),
    ]);
    expect(f.skippedLinks.map((l) => path.relative(root, l)).sort()).toEqual([
      path.join('train', 'a', 'link.jpg'),
      path.join('train', 'b', 'linked-dir'),
    ]);
  });

  test('a flat folder is split on the fly, stratified and seeded', async () => {
    const root = tmp();
    for (const c of ['cat', 'dog'])
      for (let i = 0; i < 10; i++) await writeJpeg(path.join(root, c, `${i}.JPEG`), 16, 16, i);
    const a = await openImageFolder(root, { valFraction: 0.2, seed: 3 });
    expect(a.val.filter((s) => s.label === 0)).toHaveLength(2);
    expect(a.val.filter((s) => s.label === 1)).toHaveLength(2);
    expect(a.train).toHaveLength(16);
    expect((await openImageFolder(root, { valFraction: 0.2, seed: 3 })).val).toEqual(a.val);
  });
});
