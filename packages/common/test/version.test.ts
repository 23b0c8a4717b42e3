import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { FERRY_VERSION } from '@ferry/common';

const root = path.resolve(import.meta.dirname, '../../..');
const versionOf = (dir: string): string =>
  (JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;

describe("ferry's version", () => {
  test('one version for every package, and it is the one every process reports', () => {
    const packages = readdirSync(path.join(root, 'packages'));
    expect(packages.length).toBeGreaterThan(5);
    const versions = new Set([versionOf(root), ...packages.map((p) => versionOf(path.join(root, 'packages', p)))]);
    expect([...versions]).toEqual([FERRY_VERSION]);
    expect(FERRY_VERSION).toMatch(/^\d+\.\d+\.\d+/);
  });
});
