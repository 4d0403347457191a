#!/usr/bin/env bash
# The README's test command: installs what is missing, builds (Release, and the ASan+UBSan build
# with --sanitize) and runs the whole ctest suite. Then, where no GPU is at hand, the CUDA backend
# runs too: a second build with -DMOEGRAD_CUDA=EMULATE executes its kernels in the CUDA emulator
# (tests/cuda_emulator) and runs the cuda-labelled tests there.
# Usage: scripts/test.sh [--sanitize]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs=$(nproc)
build_and_test() {
  local dir=$1 type=$2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type"
  cmake --build "$dir" -j "$jobs"
  (cd "$dir" && ctest --output-on-failure -j "$jobs")
}
if [ "${1:-}" = "--sanitize" ]; then
  build_and_test build-sanitize Sanitize
else
  build_and_test build Release
  cmake -S . -B build-cuda-emulated -DCMAKE_BUILD_TYPE=Release -DMOEGRAD_CUDA=EMULATE \
    -DMOEGRAD_BUILD_BENCH=OFF
  cmake --build build-cuda-emulated -j "$jobs" --target moegrad_tests cuda_emulator_selftest
  (cd build-cuda-emulated && ctest --output-on-failure -j "$jobs" -L cuda)
fi
