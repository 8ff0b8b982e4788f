//! The generated kernels on an NVIDIA GPU (feature `cuda`: `cargo test --release --features cuda
//! --test cuda`, or `bench/gpu.sh`): every fused and reduction kernel of real flows' programs,
//! compiled by NVRTC and run on the GPU on the CPU backend's inputs, gives the CPU's results.
//! Without the feature this file is empty; with it and no GPU, the test fails with the reason.
#![cfg(feature = "cuda")]

mod common;

use thermoflow::engine::codegen::{self, Precision};
use thermoflow::engine::cuda::Cuda;

#[test]
fn generated_kernels_on_the_gpu_match_the_cpu_backend() {
    let gpu = Cuda::new(0).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[cuda] device: {}", gpu.name());
    let mut checked = 0;
    for (name, precision, cases) in common::kernels::flow_cases() {
        let (outs, timing) = gpu.run(&cases, precision).unwrap();
        // FMA contraction on the GPU, the CPU's f32 exp2/log2/tanh polynomials: a few ulp.
        let rel = if precision == Precision::F64 {
            1e-9
        } else {
            1e-4
        };
        let mut worst = 0.0f64;
        for (case, got) in cases.iter().zip(&outs) {
            assert_eq!(got.len(), case.expected.len());
            for (j, (&g, &w)) in got.iter().zip(&case.expected).enumerate() {
                assert!(
                    codegen::agrees(g, w, rel),
                    "{name}: kernel {} element {j}: GPU {g}, CPU {w}\n{}",
                    case.source.name,
                    case.source.code
                );
                if g.is_finite() && w.is_finite() {
                    worst = worst.max((g - w).abs() / (1.0 + w.abs()));
                }
            }
        }
        let total: f64 = timing.kernel_s.iter().sum();
        eprintln!(
            "[cuda] {name}: {} kernels agree (largest difference {worst:.1e} relative), NVRTC {:.3} s, kernels {:.1} µs in all",
            cases.len(),
            timing.compile_s,
            1e6 * total
        );
        checked += cases.len();
    }
    assert!(checked >= 40, "only {checked} kernels generated");
}
