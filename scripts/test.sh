#!/usr/bin/env bash
# Sets up (deps + build, see setup.sh) and runs the test suite with CTest.
#
#   scripts/test.sh              # everything CI runs (unit + integration)
#   scripts/test.sh -L unit      # extra arguments go to ctest
#   scripts/test.sh --sanitize   # ASan + UBSan build in build-asan/, unit tests
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--sanitize" ]; then
  shift
  export TERN_BUILD_DIR=build-asan TERN_BUILD_TYPE=RelWithDebInfo
  export TERN_CMAKE_ARGS="-DTERN_SANITIZE=address,undefined -DCMAKE_CXX_FLAGS=-fno-sanitize=vptr ${TERN_CMAKE_ARGS:-}"
  # LibTorch itself is not instrumented; its own leaks at exit are not ours.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  [ $# -eq 0 ] && set -- -L unit
fi
scripts/setup.sh
BUILD_DIR=${TERN_BUILD_DIR:-build}
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j "${TERN_TEST_JOBS:-1}" "$@"
