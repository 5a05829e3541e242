#!/usr/bin/env bash
# Sets up (deps + build, see setup.sh) and runs the test suite with CTest.
#
#   scripts/test.sh              # everything CI runs (unit + integration; slow tests included)
#   scripts/test.sh -L unit      # extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${TERN_BUILD_DIR:-build}
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 -j "${TERN_TEST_JOBS:-1}" "$@"
