#!/usr/bin/env bash
# The GPU check, on a machine with an NVIDIA GPU (its driver, and NVRTC from a CUDA toolkit or
# the nvidia-cuda-nvrtc wheel): every generated kernel of real flows' programs, compiled by
# NVRTC and run on the GPU, against the CPU backend (tests/cuda.rs), with each program's
# largest difference, NVRTC time and kernel time printed; whole sampling and training plans on
# the device against the CPU, node by node; training steps with the optimiser's update on the
# device against the CPU's (tests/common/training.rs, shared with the wgpu tests).
#
#   bench/gpu.sh           build with `--features cuda` here and run
#   bench/gpu.sh TEST BIN  run binaries built elsewhere, for a machine without the crate
#                          registry: TEST from `cargo test --release --features cuda --test cuda
#                          --no-run`, BIN the `thermoflow` of `cargo build --release --features
#                          cuda` (build both with RUSTFLAGS="-C target-cpu=x86-64-v3" to run on
#                          any recent x86-64, not only on the CPU that built them)
#
# Then `thermoflow bench flows --device cuda`: sampling throughput of the same flow programs on
# the GPU and on the CPU backend (JSON on stdout), with the gemms through cuBLAS and again
# through the generated kernel (THERMOFLOW_CUBLAS=0).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ldconfig -p 2>/dev/null | grep -q libnvrtc; then
    # NVRTC from the toolkit or a wheel, where the loader does not already know it.
    for lib in $(find /usr/local /opt /usr/lib -name 'libnvrtc.so*' 2>/dev/null | head -n 1); do
        export LD_LIBRARY_PATH="$(dirname "$lib"):${LD_LIBRARY_PATH:-}"
    done
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if [ $# -ge 2 ]; then
    "$1" --nocapture --test-threads 1
    "$2" bench flows --device cuda
    THERMOFLOW_CUBLAS=0 "$2" bench flows --device cuda
else
    cargo test --release --features cuda --test cuda -- --nocapture --test-threads 1
    cargo run --release --features cuda -- bench flows --device cuda
    THERMOFLOW_CUBLAS=0 cargo run --release --features cuda -- bench flows --device cuda
fi
