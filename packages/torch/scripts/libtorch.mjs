// Where libtorch is, for binding.gyp and the install step: FERRY_LIBTORCH_DIR (a libtorch folder
// with include/ and lib/, e.g. PyTorch's CUDA libtorch download or an installed torch package's
// folder), else the system's (Debian's libtorch-dev: headers in /usr/include, libraries in the
// multiarch folder). `node scripts/libtorch.mjs include|libs|check`.
import { existsSync } from 'node:fs';
import path from 'node:path';

export function libtorchLocation(env = process.env) {
  const dir = env.FERRY_LIBTORCH_DIR;
  if (dir) {
    const include = [path.join(dir, 'include'), path.join(dir, 'include', 'torch', 'csrc', 'api', 'include')];
    const lib = path.join(dir, 'lib');
    const found = existsSync(path.join(include[0], 'ATen', 'ATen.h'));
    return { source: `FERRY_LIBTORCH_DIR=${dir}`, include, lib, found };
  }
  return {
    source: 'system (libtorch-dev)',
    include: ['/usr/include', '/usr/include/torch/csrc/api/include'],
    lib: null,
    found: existsSync('/usr/include/ATen/ATen.h'),
  };
}

function libs(loc) {
  const cuda = loc.lib && existsSync(path.join(loc.lib, 'libtorch_cuda.so'));
  const names = ['-ltorch', '-ltorch_cpu', '-lc10', ...(cuda ? ['-ltorch_cuda', '-lc10_cuda'] : [])];
  // A user-given folder is found again at run time through the addon's rpath.
  const dirs = loc.lib ? [`-L${loc.lib}`, `-Wl,-rpath,${loc.lib}`] : [];
  // --no-as-needed keeps libtorch_cuda linked although no symbol of it is named: its static
  // initialisers register the CUDA kernels.
  return cuda ? [...dirs, '-Wl,--no-as-needed', ...names, '-Wl,--as-needed'] : [...dirs, ...names];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const loc = libtorchLocation();
  const what = process.argv[2];
  if (what === 'include') console.log(loc.include[0]);
  else if (what === 'api') console.log(loc.include[1]);
  else if (what === 'libs') console.log(libs(loc).join(' '));
  else console.log(JSON.stringify(loc));
}
