import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { LIMITS, extractLimitFlags, isFerryError, limits } from '@ferry/common';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

describe('input limits', () => {
  test('docs/operations.md lists exactly LIMITS: flag, variable, default, what it bounds', () => {
    const text = readFileSync(path.join(ROOT, 'docs/operations.md'), 'utf8');
    const rows = [...text.matchAll(/^\| `(--max-[a-z-]+)` \| `(FERRY_MAX_[A-Z_]+)` \| (\d+) \| (.+) \|$/gm)].map(
      (m) => [m[1], m[2], Number(m[3]), m[4]],
    );
    expect(rows).toEqual(Object.values(LIMITS).map((l) => [l.flag, l.env, l.default, l.what]));
  });

  test('flags anywhere on the command line become variables; the rest of the line is kept in order', () => {
    const r = extractLimitFlags([
      '--max-image-pixels',
      '5000',
      'train',
      '-d',
      'x',
      '--max-sweep-cells=7',
      '--',
      '--max-zip-total-bytes',
      '1',
    ]);
    expect(r.argv).toEqual(['train', '-d', 'x', '--', '--max-zip-total-bytes', '1']);
    expect(r.env).toEqual({ FERRY_MAX_IMAGE_PIXELS: '5000', FERRY_MAX_SWEEP_CELLS: '7' });
    expect(limits({ ...r.env }).maxImagePixels).toBe(5000);
    expect(limits({}).maxImagePixels).toBe(LIMITS.maxImagePixels.default);
  });

  test.each([
    [['--max-image-pixels', '0'], '--max-image-pixels must be a positive integer (got "0"); the default is 100000000'],
    [['--max-tensor-elements', '1.5'], '--max-tensor-elements must be a positive integer (got "1.5")'],
    [['--max-sweep-cells'], '--max-sweep-cells needs a value'],
  ])('a bad value %j is FERRY_ERR_INVALID_ARGUMENT naming the flag and the default', (argv, message) => {
    let e: unknown;
    try {
      extractLimitFlags(argv);
    } catch (x) {
      e = x;
    }
    expect(isFerryError(e) && e.code).toBe('FERRY_ERR_INVALID_ARGUMENT');
    expect((e as Error).message).toContain(message);
  });

  test('a malformed variable is refused with its name', () => {
    expect(() => limits({ FERRY_MAX_ZIP_ENTRY_BYTES: 'lots' })).toThrow(
      'FERRY_MAX_ZIP_ENTRY_BYTES must be a positive integer (got "lots")',
    );
  });
});
