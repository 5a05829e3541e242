#!/usr/bin/env bash
# Coverage-guided fuzzing of tern's input parsers (job spec, cluster config, checkpoint file,
# coordinator journal, safetensors header, Criteo TSV lines) and of the coordinator's RPC
# handlers with libFuzzer (clang, ASan + UBSan).
#   scripts/fuzz.sh [seconds per target, default 60]
#   TARGETS="coordinator_rpc" scripts/fuzz.sh 600
# The parser targets build the common library only (no Torch, no gRPC) into build-fuzz/; the
# RPC target needs the control plane (gRPC, protobuf) and builds into build-fuzz-rpc/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
TARGETS=${TARGETS:-job_spec cluster_config checkpoint journal safetensors criteo_line coordinator_rpc}
FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer"
configure() {  # build dir, control plane ON/OFF, compiler flags
  cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
    -DTERN_BUILD_CONTROL="$2" -DTERN_BUILD_TRAINER=OFF -DTERN_FUZZ=ON \
    -DCMAKE_CXX_FLAGS="$3" >/dev/null
}
for t in $TARGETS; do
  # The RPC target's coverage must reach into the coordinator's libraries, not only the
  # harness: they are built with the fuzzer's instrumentation too (fuzzer-no-link).
  if [ "$t" = coordinator_rpc ]; then
    dir=build-fuzz-rpc; control=ON; max_len=16384; cflags="$FLAGS -fsanitize=fuzzer-no-link"
  else
    dir=build-fuzz; control=OFF; max_len=4096; cflags="$FLAGS"
  fi
  [ -f "$dir/build.ninja" ] && grep -qxF -- "CMAKE_CXX_FLAGS:STRING=$cflags" "$dir/CMakeCache.txt" ||
    configure "$dir" "$control" "$cflags"
  ninja -C "$dir" "${t}_fuzz"
  work=$dir/corpus-$t
  mkdir -p "$work"
  echo "fuzzing $t for ${SECS}s"
  dict=(); [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")  # format tokens
  "$dir/fuzz/${t}_fuzz" -max_total_time="$SECS" -max_len="$max_len" -timeout=10 "${dict[@]}" "$work" \
    "tests/fuzz/corpus/$t" 2>&1 | grep -E "^#[0-9]+ *DONE|ERROR|SUMMARY|Done|invariant" || true
done
