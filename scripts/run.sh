#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds train_moe and runs it with the
# given arguments (none: the default run, CIFAR-100 from ./datasets/cifar-100-binary when it is there,
# else the offline Fashion-MNIST). `scripts/run.sh --help` lists every setting.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target train_moe
./build/examples/trainer/train_moe "$@"
