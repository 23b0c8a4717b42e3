// npm's install step for @ferry/torch: builds the native addon with node-gyp from the system's
// Node headers (offline; nothing is downloaded) when libtorch's headers are found, and otherwise
// prints one line and succeeds, so that ferry installs and runs on its other backends.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { libtorchLocation } from './libtorch.mjs';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const loc = libtorchLocation();
if (process.env.FERRY_TORCH_SKIP === '1') {
  console.log('@ferry/torch: FERRY_TORCH_SKIP=1, native backend not built');
  process.exit(0);
}
if (!loc.found) {
  console.log(
    `@ferry/torch: libtorch not found (${loc.source}); the torch backend is skipped. For PyTorch's speed: apt-get install libtorch-dev, then npm rebuild @ferry/torch`,
  );
  process.exit(0);
}
const gyp =
  process.env.npm_config_node_gyp ??
  [
    path.join(
      path.dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
  ].find((p) => existsSync(p));
if (!gyp) {
  console.log('@ferry/torch: node-gyp not found (it ships with npm); the torch backend is skipped');
  process.exit(0);
}
// The system's Node headers (/usr/include/node) when present: node-gyp then needs no download.
const nodedir = existsSync(path.join(path.dirname(process.execPath), '..', 'include', 'node', 'node_api.h'))
  ? path.resolve(path.dirname(process.execPath), '..')
  : null;
const args = [
  gyp,
  'rebuild',
  ...(nodedir ? [`--nodedir=${nodedir}`] : []),
  `--jobs=${Math.max(1, Math.min(4, (await import('node:os')).availableParallelism()))}`,
];
console.log(`@ferry/torch: building the native backend against libtorch (${loc.source})`);
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.log('@ferry/torch: the native build failed (see above); the torch backend is skipped');
  process.exit(0);
}
