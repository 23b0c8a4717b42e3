#!/usr/bin/env node
// Regenerates the protocol code into a temporary folder and fails when it differs from what is
// committed in packages/protocol/src/gen (the .proto files are the only contract; generated code is
// never edited by hand).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'ferry-proto-'));
try {
  execFileSync(path.join(root, 'node_modules/.bin/buf'), ['generate', '-o', tmp], { cwd: root, stdio: 'inherit' });
  const committed = path.join(root, 'packages/protocol/src/gen');
  const fresh = path.join(tmp, 'packages/protocol/src/gen');
  const list = (d, base = d) =>
    readdirSync(d).flatMap((n) =>
      statSync(path.join(d, n)).isDirectory() ? list(path.join(d, n), base) : [path.relative(base, path.join(d, n))],
    );
  const a = list(committed).sort();
  const b = list(fresh).sort();
  const stale = [...new Set([...a, ...b])].filter((f) => {
    try {
      return readFileSync(path.join(committed, f), 'utf8') !== readFileSync(path.join(fresh, f), 'utf8');
    } catch {
      return true;
    }
  });
  if (stale.length > 0) {
    console.error(
      `proto:check: generated code is stale (${stale.join(', ')}); run \`npm run proto\` and commit the result`,
    );
    process.exit(1);
  }
  console.log(`proto:check: ${a.length} generated file(s) match proto/`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
