//! The generated kernels on an NVIDIA GPU (feature `cuda`: `cargo test --release --features cuda
//! --test cuda`, or `bench/gpu.sh`): every fused and reduction kernel of real flows' programs,
//! compiled by NVRTC and run on the GPU on the CPU backend's inputs, gives the CPU's results.
//! Without the feature this file is empty; with it and no GPU, the test fails with the reason.
#![cfg(feature = "cuda")]

mod common;

use thermoflow::engine::codegen::Precision;
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
        let worst = common::kernels::compare(&cases, &outs, rel, &name);
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

/// Whole sampling plans on the GPU (a device buffer per node, every step a generated kernel):
/// every node a step writes equals the CPU backend's, for an RQS coupling flow and the φ⁴
/// lattice flow.
#[test]
fn whole_sampling_plans_on_the_gpu_match_the_cpu_backend() {
    use thermoflow::engine::Program;
    use thermoflow::flows::builders::{coupling_flow, default_flow, lattice_flow};
    use thermoflow::flows::flow::Mode;
    use thermoflow::flows::Conditioning;
    let gpu = Cuda::new(0).unwrap_or_else(|e| panic!("{e}"));
    let cond = Conditioning::Temperature {
        t_min: 0.8,
        t_max: 1.25,
    };
    for (name, flow) in [
        (
            "coupling d=4",
            coupling_flow(4, cond, &default_flow()).unwrap(),
        ),
        ("lattice L=8", lattice_flow(8, cond, 4, 8, 1, 0).unwrap()),
    ] {
        let mut p: Program<f32> = flow.compile(Mode::Sample).unwrap();
        let batch = 1000;
        let z: Vec<f32> = (0..batch * flow.dim())
            .map(|i| ((i as f32) * 0.618).sin() * 2.0)
            .collect();
        let t: Vec<f32> = (0..batch)
            .map(|i| 0.8 + 0.45 * (i as f32) / 1000.0)
            .collect();
        let (steps, worst) = common::kernels::whole_plan_on(&gpu, &mut p, &z, &t, false, name);
        eprintln!("[cuda] {name}: the whole plan ({steps} steps) on the GPU agrees with the CPU, largest difference {worst:.1e} relative");
    }
}

/// A whole training plan on the GPU (the reverse-KL step of `bench flows`: forward, the loss,
/// every parameter's gradient, the spline's adjoint included): every node a step writes
/// equals the CPU backend's.
#[test]
fn a_whole_training_plan_on_the_gpu_matches_the_cpu_backend() {
    let gpu = Cuda::new(0).unwrap_or_else(|e| panic!("{e}"));
    let flow = thermoflow::bench::bench_flow(4).unwrap();
    let mut p = thermoflow::bench::reverse_kl_quadratic_program::<f32>(&flow).unwrap();
    let batch = 512;
    let z: Vec<f32> = (0..batch * 4)
        .map(|i| ((i as f32) * 0.37).sin() * 2.0)
        .collect();
    let t: Vec<f32> = (0..batch).map(|i| 0.5 + 2.5 * (i as f32) / 512.0).collect();
    // Gradients sum over the batch in another order (atomics): 1e-3, as for the samples.
    let (steps, worst) =
        common::kernels::whole_plan_on(&gpu, &mut p, &z, &t, true, "training plan");
    eprintln!("[cuda] training plan ({steps} steps, spline adjoints included) on the GPU agrees with the CPU, largest difference {worst:.1e} relative");
}

#[test]
fn training_steps_on_the_gpu_match_the_cpu() {
    common::training::training_steps_match_the_cpu(&cuda());
}

#[test]
fn a_training_step_on_the_gpu_moves_only_samples_and_scalars() {
    common::training::a_training_step_moves_only_samples_and_scalars(&cuda());
}

#[test]
fn a_failed_step_on_the_gpu_leaves_parameters_and_snapshots_restore_them() {
    common::training::a_failed_step_leaves_parameters_and_snapshots_restore_them(&cuda());
}

fn cuda() -> thermoflow::engine::device::Device {
    thermoflow::engine::device::open("cuda")
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a CUDA device")
}
