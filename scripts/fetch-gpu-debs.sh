#!/usr/bin/env bash
# Downloads (here, where apt works) the Debian packages a GPU node without apt needs to build
# tern-trainer: headers and small libraries only (LibTorch comes from the node's Python torch).
# scripts/build-gpu.sh unpacks them. Carry .debs/ to the node with the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .debs
cd .debs
apt-get download libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libyaml-cpp-dev libyaml-cpp0.7 \
  nlohmann-json3-dev libcli11-dev libgtest-dev googletest zlib1g-dev
ls -1
