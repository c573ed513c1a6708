#!/usr/bin/env bash
# Installs the built library into a scratch prefix, then builds and runs a
# consumer through find_package(compressedcoll) and through pkg-config.
set -euo pipefail
build_dir=$1
source_dir=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

cmake --install "$build_dir" --prefix "$scratch/prefix" > "$scratch/install.log"
test -f "$scratch/prefix/include/compressedcoll.h"

cmake -S "$source_dir/consumer" -B "$scratch/cmake-build" -DCMAKE_PREFIX_PATH="$scratch/prefix" > /dev/null
cmake --build "$scratch/cmake-build" > /dev/null
LD_LIBRARY_PATH="$scratch/prefix/lib:${LD_LIBRARY_PATH:-}" "$scratch/cmake-build/consumer"

libdir=$(find "$scratch/prefix" -name compressedcoll.pc -printf '%h\n')
export PKG_CONFIG_PATH="$libdir"
cc -std=c99 "$source_dir/consumer/consumer.c" -o "$scratch/pkg-consumer" \
  $(pkg-config --cflags --libs compressedcoll)
LD_LIBRARY_PATH="$scratch/prefix/lib:${LD_LIBRARY_PATH:-}" "$scratch/pkg-consumer"
echo "install_consumer: find_package and pkg-config consumers built and ran"
