#!/usr/bin/env bash
# The README's test command: installs what is missing, builds (Release, and the ASan+UBSan build
# with --sanitize) and runs the whole ctest suite.
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
fi
