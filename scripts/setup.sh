#!/usr/bin/env bash
# Installs tern's build dependencies from Debian's apt (skipped when already present) and the
# dashboard's npm packages (web/package-lock.json: uPlot, and playwright-core for the browser
# test, which drives Debian's chromium), then configures and builds tern into build/.
# Idempotent: run it again after pulling.
#
#   scripts/setup.sh                 # deps + Release build of everything
#   TERN_BUILD_DIR=build-x scripts/setup.sh
#   TERN_SKIP_APT=1 scripts/setup.sh # never touch apt
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=${TERN_BUILD_DIR:-build}
PACKAGES=(
  cmake ninja-build g++ pkg-config ccache zlib1g-dev
  libtorch-dev libgloo-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
  dataset-fashion-mnist
  libcivetweb-dev openssl iproute2
  python3-grpcio python3-protobuf python3-yaml gnuplot-nox
  clang-format universal-ctags
  chromium
)
# node and npm: Debian's, unless a node with npm is already installed (another vendor's nodejs
# package conflicts with Debian's npm).
command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && [ -z "${TERN_SKIP_APT:-}" ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: apt dependencies present"
fi

# The dashboard's JavaScript from the npm registry, exactly as locked; again only when the lock
# file changed. Nothing is fetched at run time: the build copies uPlot next to the pages.
lock_sum=$(sha256sum web/package-lock.json | cut -d' ' -f1)
if [ "$(cat web/node_modules/.tern-lock 2>/dev/null)" != "$lock_sum" ]; then
  echo "setup: npm ci in web/"
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > web/node_modules/.tern-lock
else
  echo "setup: npm packages present"
fi

JOBS=${TERN_JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${TERN_BUILD_TYPE:-Release} ${TERN_CMAKE_ARGS:-} >/dev/null
echo "setup: building in $BUILD_DIR with $JOBS jobs"
ninja -C "$BUILD_DIR" -j "$JOBS"
echo "setup: done: $BUILD_DIR/bin/tern, $BUILD_DIR/bin/tern-trainer"
