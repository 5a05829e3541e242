#!/usr/bin/env bash
# Builds the data plane (tern-trainer, its tests and bench helpers) against the CUDA LibTorch of
# the Python `torch` package on a GPU node. The trainer needs no gRPC, so the control plane is
# not built here. The node needs a CUDA toolkit (nvcc) for LibTorch's CMake config, and the
# header-only / small libraries tern uses: when they are not installed, unpack the .debs that
# scripts/fetch-gpu-debs.sh downloaded into .debs/ (this script does that into .deps/).
#
#   scripts/build-gpu.sh                 # -> build-gpu/bin/tern-trainer, build-gpu/tests/*
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${TERN_BUILD_DIR:-build-gpu}
PY=${PYTHON:-python3}

TORCH_PREFIX=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
CUDA_OK=$($PY -c 'import torch; print(int(torch.cuda.is_available()))')
echo "build-gpu: torch cmake prefix $TORCH_PREFIX (cuda available: $CUDA_OK)"

PREFIX_PATH="$TORCH_PREFIX"
if [ -d .debs ] && ls .debs/*.deb >/dev/null 2>&1; then
  mkdir -p .deps
  for f in .debs/*.deb; do dpkg -x "$f" .deps; done
  PREFIX_PATH="$PREFIX_PATH;$PWD/.deps/usr;$PWD/.deps/usr/lib/x86_64-linux-gnu/cmake"
  export LD_LIBRARY_PATH="$PWD/.deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi
CUDA_ROOT=${CUDA_HOME:-/usr/local/cuda}
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)

cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DTERN_BUILD_CONTROL=OFF -DTERN_CUDA=ON \
  -DCMAKE_PREFIX_PATH="$PREFIX_PATH" \
  -DCUDAToolkit_ROOT="$CUDA_ROOT" -DCMAKE_CUDA_COMPILER="$CUDA_ROOT/bin/nvcc" \
  -DCMAKE_CUDA_ARCHITECTURES=90 ${TERN_CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "build-gpu: done: $BUILD_DIR/bin/tern-trainer; run the GPU tests with: (cd $BUILD_DIR && ctest -L gpu --output-on-failure)"
