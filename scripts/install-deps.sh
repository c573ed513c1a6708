#!/usr/bin/env bash
# Installs what building and testing libcompressedcoll needs on Debian/Ubuntu,
# skipping packages that are already present.
set -euo pipefail

# python3-torch is Debian's CPU build: the Python tests never pull a PyPI torch.
packages=(build-essential cmake ninja-build pkg-config python3 libgloo-dev libibverbs-dev libgtest-dev
          iproute2 python3-dev python3-venv python3-pip python3-numpy python3-pytest python3-torch)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}"; then
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
