#!/usr/bin/env bash
# The README's test command (npm test): installs what the tests need on a fresh Debian machine,
# builds, checks and runs the whole suite. Idempotent: steps already satisfied are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
/usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null || need_apt+=(python3-torch python3-torchvision python3-numpy)
/usr/bin/python3 -c 'import scipy' 2>/dev/null || need_apt+=(python3-scipy)
# libtorch's headers and libraries: the torch backend (packages/torch) builds against them at npm ci.
[ -f /usr/include/ATen/ATen.h ] || [ -n "${FERRY_LIBTORCH_DIR:-}" ] || need_apt+=(libtorch-dev)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null || need_apt+=(nats-server)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v ip >/dev/null || need_apt+=(iproute2)
# A one-node Slurm cluster of the tests' own (test/helpers/slurm.ts): slurmctld, slurmd and munged.
{ [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ]; } || need_apt+=(slurm-wlm munge)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# The URI of the configured Debian archive that serves suite $1 (not its security archive).
debian_archive_uri() {
  local suite=$1 uri
  uri=$(grep -hsE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | sed -E 's/\[[^]]*\]//' |
    awk -v s="$suite" '$3 == s && $2 !~ /security/ { print $2; exit }')
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$suite" '
      /^[[:space:]]*$/ { if (ok && u !~ /security/ && u != "") { print u; found = 1; exit } u = ""; ok = 0; next }
      /^URIs:/ { u = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
      END { if (!found && ok && u !~ /security/ && u != "") print u }' | head -n 1)
  fi
  echo "$uri"
}

# WebGPU without a GPU: Dawn (the `webgpu` npm package) on Mesa's lavapipe, a Vulkan driver that
# runs on the CPU. Dawn needs lavapipe 24 or later (bookworm's 22.3 lacks dynamic indexing of
# uniform arrays); bookworm-backports has 25.
mesa=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || echo 0)
if ! dpkg --compare-versions "$mesa" ge 24; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  target=()
  if [ "$codename" = bookworm ]; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      # The backports suite from the same Debian archive this machine already uses (never a fixed
      # host): its one-line or deb822 source for the release.
      archive=$(debian_archive_uri "$codename")
      if [ -z "$archive" ]; then
        echo "test.sh: no Debian source for $codename in /etc/apt/sources.list{,.d}; add $codename-backports (for mesa-vulkan-drivers >= 24) and rerun" >&2
        exit 1
      fi
      echo "deb $archive $codename-backports main" | $SUDO tee /etc/apt/sources.list.d/ferry-backports.list >/dev/null
    fi
    target=(-t bookworm-backports)
  fi
  echo "test.sh: installing Mesa's lavapipe (mesa-vulkan-drivers ${target[*]}) for the WebGPU tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${target[@]}" mesa-vulkan-drivers libvulkan1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "test.sh: npm ci"
  npm ci --no-audit --no-fund
fi

# The native addon, when npm ci ran before libtorch was installed or its C++ source changed since.
addon=packages/torch/build/Release/ferry_torch.node
if [ ! -f "$addon" ] || [ packages/torch/native/ferry_torch.cc -nt "$addon" ] || [ packages/torch/binding.gyp -nt "$addon" ]; then
  echo "test.sh: building the torch backend's native addon"
  node packages/torch/scripts/install.mjs
fi
[ -f "$addon" ] || { echo "test.sh: the torch backend did not build (see above); the suite tests it" >&2; exit 1; }

echo "test.sh: build + typecheck"
npm run --silent typecheck
echo "test.sh: lint + dependency direction + generated protocol code up to date"
npm run --silent lint
npm run --silent proto:check
echo "test.sh: vitest"
npx vitest run "$@"
