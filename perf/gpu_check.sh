#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU:
#   1. builds with CUDA for sm_80 and sm_90 (one fat binary; CUDA_ARCHS overrides),
#   2. runs the tests labelled gpu (device codecs bit-identical to the host
#      codecs; compressed_allreduce on device buffers across 4 ranks sharing
#      the GPU through the local transport, bit for bit against the host path)
#      and fails if any of them skipped,
#   3. runs the kernel benchmark next to a device-to-device copy measured in
#      the same run, and fails unless nat's fused hop and encode reach 80% of
#      the copy's bandwidth.
# Environment: BUILD (build folder, default build-gpu), CUDA_ARCHS ("80;90"),
# CMAKE_ARGS (extra cmake arguments), CC_SKIP_DEPS=1 (do not run
# scripts/install-deps.sh: a machine without a package mirror), BENCH_ARGS
# (extra cc_gpu_kernel_bench arguments), RESULTS (folder for the log and JSON,
# default the build folder), UNIT=1 (also run the unit tests).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build-gpu}
results=${RESULTS:-$build}
mkdir -p "$results"

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi -L failed); run it on a GPU machine" >&2
  exit 1
fi
if [ "${CC_SKIP_DEPS:-0}" != 1 ]; then scripts/install-deps.sh; fi

# shellcheck disable=SC2086
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCC_ENABLE_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-80;90}" ${CMAKE_ARGS:-}
cmake --build "$build" -j "$(nproc)"
grep -q "CC_HAVE_NCCL:INTERNAL=ON\|CC_NCCL_LIBRARY:FILEPATH=/" "$build/CMakeCache.txt" &&
  echo "gpu_check: NCCL transport built ($(grep CC_NCCL_LIBRARY: "$build/CMakeCache.txt" | cut -d= -f2))"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$results/gpu.txt"

# The gpu tests must run, not skip: this is a GPU machine.
set +e
ctest --test-dir "$build" --output-on-failure -L gpu 2>&1 | tee "$results/gpu_tests.log"
tests_status=${PIPESTATUS[0]}
set -e
if [ "$tests_status" -ne 0 ]; then
  echo "gpu_check: FAILED: gpu tests" >&2
  exit 1
fi
if grep -q "Skipped\|Not Run" "$results/gpu_tests.log"; then
  echo "gpu_check: FAILED: a gpu test skipped on a GPU machine" >&2
  exit 1
fi
if [ "${UNIT:-0}" = 1 ]; then
  ctest --test-dir "$build" --output-on-failure -j "$(nproc)" -L unit 2>&1 | tail -5
fi

set +e
# shellcheck disable=SC2086
"$build/perf/cc_gpu_kernel_bench" --check --json "$results/gpu_kernels.json" ${BENCH_ARGS:-} |
  tee "$results/gpu_kernels.txt"
bench_status=${PIPESTATUS[0]}
set -e
if [ "$bench_status" -ne 0 ]; then
  echo "gpu_check: FAILED: kernel bandwidth below target (see the table)" >&2
  exit 1
fi
echo "gpu_check: passed"
