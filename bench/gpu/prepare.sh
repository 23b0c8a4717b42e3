#!/usr/bin/env bash
# Prepares .gpu/ for benchmarks on a lent GPU machine, which has a driver with Vulkan but no
# Node.js, no npm registry and no network:
#   .gpu/node.xz                 this machine's node binary, compressed
#   .gpu/*.deb                   the Vulkan/GL loader packages the NVIDIA ICD needs
#   .gpu/{profile,webgpu}.mjs    bench/engine's scripts bundled with ferry and TensorFlow.js (esbuild)
#   .gpu/node_modules/webgpu     Dawn for linux-x64 only (the npm package holds every platform)
#   .gpu/torch_bench.py          the PyTorch side of the comparison
#   .gpu/enter.sh                sourced first on the GPU machine
# .gpu/ is ignored through .git/info/exclude; name it in the device run's `carry`. Then:
#   source .gpu/enter.sh && node .gpu/webgpu.mjs --profile-script .gpu/profile.mjs \
#     --torch-script .gpu/torch_bench.py > $OUT/webgpu.jsonl
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
npm run --silent build
mkdir -p .gpu/node_modules/webgpu/dist .git/info
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
[ -f .gpu/node.xz ] || xz -T2 -6 -c "$(readlink -f "$(command -v node)")" > .gpu/node.xz
if ! ls .gpu/libvulkan1_*.deb >/dev/null 2>&1; then
  apt-get update -qq >/dev/null 2>&1 || true
  (cd .gpu && apt-get download libvulkan1 libglvnd0 libglx0 libegl1 libgl1 libopengl0 libgles2 2>&1 | grep -v unsandboxed || true)
fi
for entry in profile webgpu; do
  npx esbuild "bench/engine/$entry.mjs" --bundle --platform=node --format=esm --log-level=warning \
    --external:webgpu --external:@tensorflow/tfjs-node --external:@tensorflow/tfjs-node-gpu \
    --alias:sharp=./bench/gpu/no-sharp.mjs --ignore-annotations \
    --banner:js="import { createRequire as __ferryRequire } from 'node:module'; const require = __ferryRequire(import.meta.url);" \
    --outfile=".gpu/$entry.mjs"
done
cp node_modules/webgpu/index.js node_modules/webgpu/package.json .gpu/node_modules/webgpu/
rm -rf .gpu/node_modules/webgpu/dist/linux-x64
cp -r node_modules/webgpu/dist/linux-x64 .gpu/node_modules/webgpu/dist/
cp bench/engine/torch_bench.py .gpu/
cat > .gpu/enter.sh <<'EOS'
# sourced on the GPU machine from the checkout root
for f in .gpu/*.deb; do dpkg -x "$f" /; done; ldconfig
mkdir -p /tmp/gpu-node/bin && xz -dc .gpu/node.xz > /tmp/gpu-node/bin/node && chmod +x /tmp/gpu-node/bin/node
export PATH=/tmp/gpu-node/bin:$PATH
# The bundles import `webgpu`: Node finds it in .gpu/node_modules, beside them.
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
  [ -f "$icd" ] && export VK_ICD_FILENAMES=$icd && break
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
node --version
EOS
du -sh .gpu
echo "ready: carry .gpu (under 64 MiB) in the device run"
