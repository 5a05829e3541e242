#!/usr/bin/env bash
# Installs tern's build dependencies from Debian's apt (skipped when already present), then
# configures and builds tern into build/. Idempotent: run it again after pulling.
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
)

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

JOBS=${TERN_JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${TERN_BUILD_TYPE:-Release} ${TERN_CMAKE_ARGS:-} >/dev/null
echo "setup: building in $BUILD_DIR with $JOBS jobs"
ninja -C "$BUILD_DIR" -j "$JOBS"
echo "setup: done: $BUILD_DIR/bin/tern, $BUILD_DIR/bin/tern-trainer"
