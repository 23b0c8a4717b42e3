import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';
import { ERRORS, FerryError, GRPC_STATUS, exitCodeOf, grpcStatusOf, isErrorCode } from '@ferry/common';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

/** The rows of docs/errors.md's table: code, gRPC status, exit. */
function documented(): Map<string, { grpc: string; exit: number; retry: string }> {
  const text = readFileSync(path.join(ROOT, 'docs/errors.md'), 'utf8');
  const out = new Map<string, { grpc: string; exit: number; retry: string }>();
  for (const m of text.matchAll(/^\| `(FERRY_ERR_[A-Z_]+)` \| `([A-Z_]+)` \| (\d) \| (\w+) \|/gm))
    out.set(m[1]!, { grpc: m[2]!, exit: Number(m[3]), retry: m[4]! });
  return out;
}

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (name === 'node_modules' || name === 'dist' || name === 'gen') continue;
    if (statSync(p).isDirectory()) sources(p, out);
    else if (/\.(ts|js)$/.test(name)) out.push(p);
  }
  return out;
}

test('docs/errors.md lists exactly the registry: every code, its gRPC status, exit code and retry policy', () => {
  const doc = documented();
  expect([...doc.keys()].sort()).toEqual(Object.keys(ERRORS).sort());
  for (const [code, def] of Object.entries(ERRORS))
    expect(doc.get(code), code).toEqual({ grpc: def.grpc, exit: def.exit, retry: def.retry });
});

test('every FERRY_ERR_ code written in the sources is in the registry', () => {
  const unknown = new Set<string>();
  for (const file of sources(path.join(ROOT, 'packages'))) {
    for (const m of readFileSync(file, 'utf8').matchAll(/FERRY_ERR_[A-Z_]+/g))
      if (!isErrorCode(m[0])) unknown.add(`${path.relative(ROOT, file)}: ${m[0]}`);
  }
  expect([...unknown]).toEqual([]);
});

test('a code maps to one gRPC status and one exit code; the error keeps its code, cause and class name', () => {
  expect(grpcStatusOf('FERRY_ERR_SWEEP_INVALID')).toBe(GRPC_STATUS.INVALID_ARGUMENT);
  expect(grpcStatusOf('FERRY_ERR_WEIGHTS_CORRUPT')).toBe(15);
  expect(exitCodeOf('FERRY_ERR_INTERNAL')).toBe(1);
  expect(exitCodeOf('FERRY_ERR_DATASET')).toBe(2);
  class ExampleError extends FerryError {}
  const cause = new Error('root');
  const e = new ExampleError('FERRY_ERR_DATASET', 'no such folder', { cause });
  expect([e.code, e.cause, e.name, e instanceof Error]).toEqual(['FERRY_ERR_DATASET', cause, 'ExampleError', true]);
});
