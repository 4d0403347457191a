#!/usr/bin/env bash
# Installs the Debian packages moegrad builds with, when any is missing (sudo when not root).
# Usage: scripts/setup.sh [extra packages...]
set -euo pipefail
packages=(cmake g++ make pkg-config libeigen3-dev catch2 libstb-dev zlib1g-dev libcli11-dev
          nlohmann-json3-dev dataset-fashion-mnist "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
