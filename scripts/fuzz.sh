#!/usr/bin/env bash
# Coverage-guided fuzzing of tern's input parsers (job spec, cluster config, checkpoint file,
# coordinator journal) with libFuzzer (clang, ASan + UBSan).
#   scripts/fuzz.sh [seconds per target, default 60]
# Builds the common library and the fuzz targets only (no Torch, no gRPC) into build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DTERN_BUILD_CONTROL=OFF -DTERN_BUILD_TRAINER=OFF -DTERN_FUZZ=ON \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" >/dev/null
TARGETS=${TARGETS:-job_spec cluster_config checkpoint journal}
ninja -C build-fuzz $(for t in $TARGETS; do echo "${t}_fuzz"; done)
for t in $TARGETS; do
  work=build-fuzz/corpus-$t
  mkdir -p "$work"
  echo "fuzzing $t for ${SECS}s"
  build-fuzz/fuzz/${t}_fuzz -max_total_time="$SECS" -max_len=4096 -timeout=10 "$work" tests/fuzz/corpus/$t 2>&1 |
    grep -E "^#[0-9]+ *DONE|ERROR|SUMMARY|Done" || true
done
