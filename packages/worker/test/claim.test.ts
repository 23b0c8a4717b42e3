import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { ClaimFile } from '../src/claim.js';

describe("the worker's crash-recovery claim", () => {
  const file = () => path.join(mkdtempSync(path.join(tmpdir(), 'ferry-claim-')), 'attempt.json');

  test('what one process writes, the next reads; cleared, nothing is claimed', () => {
    const claim = new ClaimFile(file());
    expect(claim.read()).toBeNull();
    claim.write({ cellId: 'c1', attemptId: 'a1', epoch: 3 });
    expect(new ClaimFile(claim.file).read()).toEqual({ cellId: 'c1', attemptId: 'a1', epoch: 3 });
    claim.clear();
    expect(existsSync(claim.file)).toBe(false);
    expect(claim.read()).toBeNull();
  });

  test('a claim cut short by the crash (or of another shape) is no claim, and is removed', () => {
    for (const text of ['{"cellId":"c1","attem', '{"cellId":"c1","attemptId":7,"epoch":1}', '']) {
      const claim = new ClaimFile(file());
      writeFileSync(claim.file, text);
      expect(claim.read()).toBeNull();
      expect(existsSync(claim.file)).toBe(false);
    }
  });

  test('constructing one touches nothing on disk', () => {
    const f = file();
    new ClaimFile(f);
    expect(existsSync(f)).toBe(false);
  });
});
