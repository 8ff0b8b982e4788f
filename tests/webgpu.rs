//! The generated WGSL kernels through wgpu (feature `wgpu`: `cargo test --release --features
//! wgpu --test webgpu`; without a GPU, Mesa's lavapipe runs them on the CPU): every step of
//! real flows' sampling, density and training plans, run on the CPU backend's inputs, gives
//! the CPU's results. Without the feature this file is empty; with it and no adapter, the test
//! fails with the reason.
#![cfg(feature = "wgpu")]

use rand::{Rng, SeedableRng};
use thermoflow::engine::codegen;
use thermoflow::engine::wgsl;
use thermoflow::engine::Program;
use thermoflow::flows::builders::{
    coupling_flow, default_flow, lattice_flow, radial_flow, spin_flow,
};
use thermoflow::flows::flow::Mode;
use thermoflow::flows::Conditioning;

mod common;

/// Every step's kernel of `p`'s plan (with gradients where `train`) on inputs `x`, `cond`,
/// through wgpu against the CPU ([`common::kernels::check_wgpu`]).
#[allow(clippy::too_many_arguments)]
fn check(
    p: &mut Program<f32>,
    input: &str,
    x: &[f32],
    t: &[f32],
    train: bool,
    rel: f64,
    what: &str,
    kinds: &mut std::collections::BTreeSet<&'static str>,
) -> (usize, f64) {
    p.inspect(&[(input, x), ("cond", t)], train, |plan, store, _| {
        common::kernels::check_wgpu(plan, store, rel, what, kinds)
    })
    .unwrap()
}

#[test]
fn every_generated_kernel_through_wgpu_matches_the_cpu_backend() {
    let cond = Conditioning::Temperature {
        t_min: 0.5,
        t_max: 2.0,
    };
    let flows = [
        ("coupling", coupling_flow(3, cond, &default_flow()).unwrap()),
        ("radial", radial_flow(2, cond, 2, 1).unwrap()),
        ("lattice", lattice_flow(4, cond, 2, 2, 1, 0).unwrap()),
        ("spins", spin_flow(4, cond, 2, 2, 1, 4, 2, 0).unwrap()),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut uniform = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let mut kernels = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for (name, flow) in &flows {
        for mode in [Mode::Sample, Mode::Density] {
            let mut p: Program<f32> = flow.compile(mode).unwrap();
            for param in p.param_names() {
                let n = p.param(&param).unwrap().len();
                let v: Vec<f64> = uniform(n, -0.5, 0.5).into_iter().map(f64::from).collect();
                p.set_param(&param, &v).unwrap();
            }
            let batch = 37; // leaves a partial workgroup
            let x = uniform(batch * flow.dim(), -2.0, 2.0);
            let t = uniform(batch, 0.5, 2.0);
            let input = if mode == Mode::Sample { "z" } else { "x" };
            let what = format!("{name} {mode:?}");
            // The CPU's f32 exp2/log2/tanh are polynomials, the device's its own: a few ulp.
            let (n, worst) = check(&mut p, input, &x, &t, false, 1e-4, &what, &mut kinds);
            eprintln!("[wgpu] {what}: {n} kernels agree (largest difference {worst:.1e})");
            kernels += n;
        }
    }
    // Training plans: forward, loss, every parameter's gradient, the spline's adjoint, the
    // view adjoints' atomic adds, the periodic gathers' adjoints (sums in another order: 1e-3).
    for (name, flow) in [
        ("rqs coupling", thermoflow::bench::bench_flow(4).unwrap()),
        ("lattice", lattice_flow(4, cond, 2, 2, 1, 0).unwrap()),
    ] {
        let mut p = thermoflow::bench::reverse_kl_quadratic_program::<f32>(&flow).unwrap();
        let batch = 300;
        let z = uniform(batch * flow.dim(), -2.0, 2.0);
        let t = uniform(batch, 0.5, 2.0);
        let what = format!("{name} training");
        let (n, worst) = check(&mut p, "z", &z, &t, true, 1e-3, &what, &mut kinds);
        eprintln!("[wgpu] {what}: {n} kernels agree (largest difference {worst:.1e})");
        kernels += n;
    }
    assert!(kernels >= 100, "only {kernels} kernels generated");
    eprintln!("[wgpu] kinds of step checked: {kinds:?}");
    let all = [
        "fused",
        "reduce",
        "matmul",
        "scatter",
        "spline",
        "spline_adjoint",
    ];
    for k in all.into_iter().chain(["const", "take", "put"]) {
        assert!(kinds.contains(k), "no {k} step among {kinds:?}");
    }
}

/// Every level of the launch grid: a kernel over more invocations than one row of 65 535
/// workgroups holds runs its last elements too.
#[test]
fn a_kernel_wider_than_one_grid_row_covers_every_element() {
    let gpu = common::kernels::webgpu();
    let g = thermoflow::engine::GraphBuilder::new();
    let n = 65_535 * 256 + 1000;
    let x = g.input("x", &[n]);
    let outs = [(x * x).output("y")];
    let mut p: Program<f32> = Program::compile(g, &outs, None).unwrap();
    let v: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.001).collect();
    p.inspect(&[("x", &v)], false, |plan, store, _| {
        let shaders = wgsl::shaders(plan);
        let sh = shaders.last().unwrap();
        let ins: Vec<&[f32]> = sh.inputs.iter().map(|&k| plan.buffer(store, k)).collect();
        let got = gpu.run(sh, &ins, n).unwrap();
        assert_eq!(wgsl::grid(n).1, 2);
        for j in [0, n / 2, n - 1] {
            assert_eq!(got[j], v[j] * v[j], "element {j}");
        }
    })
    .unwrap();
}

/// Whole plans on the device (a buffer per node, every step a generated kernel reading what
/// the steps before it wrote, one submission): every node a step writes equals the CPU
/// backend's, for the sampling plans of an RQS coupling flow and the φ⁴ lattice flow and for
/// the reverse-KL training step of `bench flows` (forward, loss, every parameter's gradient).
#[test]
fn whole_plans_through_wgpu_match_the_cpu_backend() {
    let gpu = common::kernels::webgpu();
    let cond = Conditioning::Temperature {
        t_min: 0.8,
        t_max: 1.25,
    };
    let sampling = [
        (
            "coupling d=4",
            coupling_flow(4, cond, &default_flow()).unwrap(),
        ),
        ("lattice L=8", lattice_flow(8, cond, 4, 8, 1, 0).unwrap()),
    ];
    let whole = |p: &mut Program<f32>, z: &[f32], t: &[f32], train: bool, name: &str| {
        let (steps, worst) = common::kernels::whole_plan_on(gpu, p, z, t, train, name);
        eprintln!(
            "[wgpu] {name}: the whole plan ({steps} steps) agrees, largest difference {worst:.1e}"
        );
    };
    for (name, flow) in &sampling {
        let mut p: Program<f32> = flow.compile(Mode::Sample).unwrap();
        let batch = 1000;
        let z: Vec<f32> = (0..batch * flow.dim())
            .map(|i| ((i as f32) * 0.618).sin() * 2.0)
            .collect();
        let t: Vec<f32> = (0..batch)
            .map(|i| 0.8 + 0.45 * (i as f32) / 1000.0)
            .collect();
        whole(&mut p, &z, &t, false, name);
    }
    let flow = thermoflow::bench::bench_flow(4).unwrap();
    let mut p = thermoflow::bench::reverse_kl_quadratic_program::<f32>(&flow).unwrap();
    let batch = 512;
    let z: Vec<f32> = (0..batch * 4)
        .map(|i| ((i as f32) * 0.37).sin() * 2.0)
        .collect();
    let t: Vec<f32> = (0..batch).map(|i| 0.5 + 2.5 * (i as f32) / 512.0).collect();
    whole(&mut p, &z, &t, true, "training plan");
}

/// `--device wgpu` end to end: a flow compiled after the device is selected samples through
/// wgpu, with the same draws and densities as on the CPU (the base draws are the host's), and
/// the command line takes the flag on any command and runs flow-MCMC with it.
#[test]
fn a_flow_on_the_selected_device_samples_as_on_the_cpu() {
    use thermoflow::engine::device;
    let cond = Conditioning::Temperature {
        t_min: 0.5,
        t_max: 2.0,
    };
    let perturb =
        |f: &mut thermoflow::flows::Flow, seed: u64| thermoflow::bench::perturb(f, seed, 0.1);
    let draw = |f: &thermoflow::flows::Flow| {
        let mut r = thermoflow::rng::seeded(5);
        let s = f.sample_and_log_prob(777, &[0.9], &mut r).unwrap();
        let d = f.log_prob(s.x.view(), &[0.9]).unwrap();
        (s, d)
    };
    // Each kernel agrees to a few 1e-7; through 8 perturbed spline layers the flow's large
    // derivatives amplify that (measured: median 6e-7, largest 1.4e-3 of 3885 values at
    // ±0.3 perturbations): 1e-3, as for whole plans.
    let agree = |f: &thermoflow::flows::Flow, g: &thermoflow::flows::Flow, what: &str| {
        let ((cpu, cpu_d), (gpu, gpu_d)) = (draw(f), draw(g));
        let pairs = cpu
            .x
            .iter()
            .zip(gpu.x.iter())
            .chain(cpu.log_q.iter().zip(&gpu.log_q))
            .chain(cpu_d.iter().zip(&gpu_d));
        for (&c, &g) in pairs {
            assert!(codegen::agrees(g, c, 1e-3), "{what}: wgpu {g}, CPU {c}");
        }
    };
    let mut flow = coupling_flow(3, cond, &default_flow()).unwrap();
    perturb(&mut flow, 11);
    flow.log_prob(ndarray::Array2::zeros((1, 3)).view(), &[0.9])
        .unwrap(); // compiled on the CPU
    device::select("wgpu").unwrap();
    let mut on_gpu = flow.clone(); // a clone compiles its programs afresh, on the device
    agree(&flow, &on_gpu, "first draws");
    device::select("cpu").unwrap();
    // New parameters (as after training steps): the device's programs stay, their parameters
    // go up again because they changed; stale ones would not agree.
    perturb(&mut flow, 12);
    perturb(&mut on_gpu, 12);
    agree(&flow, &on_gpu, "after the parameters changed");
    let out = common::run_ok(common::bin().args([
        "--device",
        "wgpu",
        "mcmc",
        "--system",
        "harmonic",
        "--sampler",
        "flow",
        "--train-steps",
        "20",
        "--steps",
        "60",
        "--chains",
        "8",
        "--quiet",
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let acc = report["acceptance"].as_f64().unwrap();
    assert!(acc > 0.0 && acc <= 1.0, "acceptance {acc}");
}

#[test]
fn training_steps_on_wgpu_match_the_cpu() {
    common::training::training_steps_match_the_cpu(&wgpu());
}

#[test]
fn a_training_step_on_wgpu_moves_only_samples_and_scalars() {
    common::training::a_training_step_moves_only_samples_and_scalars(&wgpu());
}

#[test]
fn a_failed_step_on_wgpu_leaves_parameters_and_snapshots_restore_them() {
    common::training::a_failed_step_leaves_parameters_and_snapshots_restore_them(&wgpu());
}

fn wgpu() -> thermoflow::engine::device::Device {
    thermoflow::engine::device::open("wgpu")
        .unwrap()
        .expect("a wgpu device")
}

/// A program run at more batch sizes than it keeps plans for holds no more on the device
/// either (a plan it drops releases the device's buffers), and a dropped size compiles again
/// and gives the CPU's values.
#[test]
fn a_program_on_wgpu_holds_as_many_plans_as_it_keeps() {
    let cond = Conditioning::Temperature {
        t_min: 0.5,
        t_max: 2.0,
    };
    let flow = coupling_flow(2, cond, &default_flow()).unwrap();
    let mut cpu: Program<f32> = flow.compile(Mode::Sample).unwrap();
    let mut gpu: Program<f32> = flow.compile(Mode::Sample).unwrap();
    gpu.set_device(Some(&wgpu())).unwrap();
    let run = |p: &mut Program<f32>, b: usize| {
        let z: Vec<f32> = (0..2 * b).map(|i| (i as f32 * 0.37).sin()).collect();
        let t = vec![1.0f32; b];
        p.run(&[("z", &z), ("cond", &t)])
            .unwrap()
            .take("x")
            .unwrap()
    };
    for b in 1..=9 {
        run(&mut gpu, b);
        assert!(
            gpu.device_plans().unwrap() <= 6,
            "batch {b}: {:?} plans",
            gpu.device_plans()
        );
    }
    for (g, c) in run(&mut gpu, 1).iter().zip(run(&mut cpu, 1)) {
        assert!(
            codegen::agrees(*g as f64, c as f64, 1e-5),
            "wgpu {g}, CPU {c}"
        );
    }
}
