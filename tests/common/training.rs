//! Training on a device against the CPU, for every backend's test file (`webgpu.rs` on
//! lavapipe in CI, `cuda.rs` on an NVIDIA GPU): the forward and backward passes and the
//! optimiser's update run on the device; draws, losses and parameters agree with the CPU's,
//! only samples and scalars cross per step, a failed step changes nothing, and a snapshot
//! restores parameters and moments.

use rand::{Rng, SeedableRng};
use thermoflow::engine::codegen;
use thermoflow::engine::device::Device;
use thermoflow::engine::{Adam, Optimizer, Program, Sgd};
use thermoflow::flows::builders::{coupling_flow, default_flow};
use thermoflow::flows::Conditioning;

/// A coupling flow (d = 3) with perturbed parameters and its reverse-KL + forward-KL training
/// program, once on the CPU and once on `dev`.
fn training_pair(dev: &Device) -> (Program<f32>, Program<f32>) {
    let cond = Conditioning::Temperature {
        t_min: 0.5,
        t_max: 2.0,
    };
    let mut flow = coupling_flow(3, cond, &default_flow()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for l in flow.layers_mut() {
        for (_, set) in thermoflow::flows::Bijection::param_sets_mut(l) {
            for t in &mut set.tensors {
                for v in &mut t.values {
                    *v += rng.random_range(-0.1..0.1);
                }
            }
        }
    }
    let program = || {
        let mut p = thermoflow::train::losses::combined_program(&flow, true, 0.5).unwrap();
        flow.write_params(&mut p).unwrap();
        p
    };
    let (cpu, mut gpu) = (program(), program());
    gpu.set_device(Some(dev)).unwrap();
    (cpu, gpu)
}

/// Five training steps with `opt` on the CPU (the update on the host, f64 moments) and on
/// `dev` (the update on the device, f32): equal samples, losses and parameters after every
/// step.
fn train_on_both<O: Optimizer + Clone>(dev: &Device, opt: O, what: &str) {
    let (mut cpu, mut gpu) = training_pair(dev);
    let (d, b) = (3, 64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut uniform = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let close = |a: f64, c: f64, at: &str| {
        assert!(
            codegen::agrees(a, c, 1e-3),
            "{what}, {at}: wgpu {a}, CPU {c}"
        )
    };
    let names = cpu.param_names();
    let mut opts = (opt.clone(), opt);
    for step in 0..5 {
        let (z, t) = (uniform(b * d, -1.5, 1.5), uniform(b, 0.6, 1.8));
        let (xd, td) = (uniform(b * d, -1.0, 1.0), uniform(b, 0.6, 1.8));
        let w = vec![1.0 / b as f32; b];
        let inputs = |grad_u: &[f32]| -> Vec<(&str, Vec<f32>)> {
            vec![
                ("z", z.clone()),
                ("cond", t.clone()),
                ("grad_u", grad_u.to_vec()),
                ("w", w.clone()),
                ("x_data", xd.clone()),
                ("cond_data", td.clone()),
            ]
        };
        let zero = vec![0f32; b * d];
        let owned = inputs(&zero);
        let given: Vec<(&str, &[f32])> = owned.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        if step == 0 {
            // One whole forward and backward pass: loss and every gradient, nothing updated.
            let (lc, _, gc) = cpu.run_with_grads(&given).unwrap();
            let (lg, _, gg) = gpu.run_with_grads(&given).unwrap();
            close(lg, lc, "loss");
            for (g, c) in gg.iter().flatten().zip(gc.iter().flatten()) {
                close(*g, *c, "gradient");
            }
        }
        let (xc, lqc, lc, xg, lqg, lg);
        if step < 4 {
            // The two halves of a reverse-KL step, ∇U = x (a unit harmonic energy) from the
            // host; the update on the device after them.
            let finish = |p: &mut Program<f32>, opt: &mut O| {
                let out = p.step_begin(&given, &["grad_u", "w"]).unwrap();
                let x = out.get("x").unwrap().to_vec();
                let lq = out.get("log_q").unwrap().to_vec();
                let loss = p.step_finish(&[("grad_u", &x), ("w", &w)], opt).unwrap();
                (x, lq, loss)
            };
            (xc, lqc, lc) = finish(&mut cpu, &mut opts.0);
            (xg, lqg, lg) = finish(&mut gpu, &mut opts.1);
        } else {
            // A whole step with ∇U given up front.
            let owned = inputs(&xd);
            let given: Vec<(&str, &[f32])> =
                owned.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            let whole = |p: &mut Program<f32>, opt: &mut O| {
                let (loss, out) = p.step(&given, opt).unwrap();
                let x = out.get("x").unwrap().to_vec();
                (x, out.get("log_q").unwrap().to_vec(), loss)
            };
            (xc, lqc, lc) = whole(&mut cpu, &mut opts.0);
            (xg, lqg, lg) = whole(&mut gpu, &mut opts.1);
        }
        for (g, c) in xg.iter().zip(&xc).chain(lqg.iter().zip(&lqc)) {
            close(*g as f64, *c as f64, &format!("step {step} sample"));
        }
        close(lg, lc, &format!("step {step} loss"));
        // Equal parameters after the update (read back from the device for the comparison);
        // the device's next step must use them: a stale copy fails the next comparison.
        if step % 2 == 1 {
            for n in &names {
                let (pg, pc) = (gpu.param(n).unwrap(), cpu.param(n).unwrap());
                for (g, c) in pg.iter().zip(&pc) {
                    close(*g, *c, &format!("step {step} parameter {n}"));
                }
            }
        }
    }
}

/// Training steps on `dev` with SGD, Adam and Adam clipped agree with the CPU's.
pub fn training_steps_match_the_cpu(dev: &Device) {
    train_on_both(
        dev,
        Sgd {
            lr: 0.05,
            clip: None,
        },
        "SGD",
    );
    // Adam's first steps are lr · sign(g): where a gradient is zero to rounding, the CPU's and
    // the device's differ in sign and so do the steps. With ε above those gradients the step
    // is smooth in g and the comparison sees every coefficient of the rule.
    let adam = || {
        let mut a = Adam::new(0.02);
        a.eps = 1e-2;
        a
    };
    train_on_both(dev, adam(), "Adam");
    // Clipped at a norm far below the gradients': the scale the host computes from Σ g² read
    // back acts on the device.
    train_on_both(dev, adam().with_clip(1e-3), "Adam clipped");
}

/// A training step on `dev` moves the samples, ∇U and a few scalars, and no parameter,
/// gradient or moment; reading the parameters pulls them back once.
pub fn a_training_step_moves_only_samples_and_scalars(dev: &Device) {
    let (_, mut gpu) = training_pair(dev);
    let (d, b) = (3, 64);
    let mut opt = Adam::new(0.01);
    let w = vec![1.0 / b as f32; b];
    let mut traffic = Vec::new();
    for step in 0..3 {
        let z: Vec<f32> = (0..b * d)
            .map(|i| ((i * 7 + step) % 13) as f32 / 6.5 - 1.0)
            .collect();
        let t: Vec<f32> = (0..b)
            .map(|i| 0.6 + ((i + step) % 5) as f32 * 0.2)
            .collect();
        let xd: Vec<f32> = z.iter().map(|v| 0.5 * v).collect();
        let inputs: [(&str, &[f32]); 6] = [
            ("z", &z),
            ("cond", &t),
            ("grad_u", &z),
            ("w", &w),
            ("x_data", &xd),
            ("cond_data", &t),
        ];
        let before = gpu.device_traffic().unwrap();
        let out = gpu.step_begin(&inputs, &["grad_u", "w"]).unwrap();
        let x = out.get("x").unwrap().to_vec();
        gpu.step_finish(&[("grad_u", &x), ("w", &w)], &mut opt)
            .unwrap();
        let after = gpu.device_traffic().unwrap();
        traffic.push((after.0 - before.0, after.1 - before.1));
    }
    // After the first step (parameters, moments, w go up once): z, cond, x_data, cond_data,
    // ∇U and the eight coefficients up; x, log q, the loss and Σ g² down. No parameter,
    // gradient or moment crosses.
    let up = 3 * b * d + 2 * b + 8;
    let down = b * d + b + 2;
    for (step, &(u, dn)) in traffic.iter().enumerate().skip(1) {
        assert_eq!((u, dn), (up, down), "step {step}: floats (up, down)");
    }
    let n_params = gpu.n_params();
    assert!(
        traffic[0].0 >= up + 3 * n_params,
        "first step uploads {:?}",
        traffic[0]
    );
    // Reading the parameters pulls them (and the moments) back once.
    let names = gpu.param_names();
    let before = gpu.device_traffic().unwrap();
    for n in &names {
        gpu.param(n).unwrap();
    }
    let after = gpu.device_traffic().unwrap();
    assert_eq!(after.1 - before.1, 3 * n_params);
}

/// A step with a NaN in ∇U leaves the device's parameters alone, and a snapshot restores
/// parameters and moments so that the same step repeats.
pub fn a_failed_step_leaves_parameters_and_snapshots_restore_them(dev: &Device) {
    let (_, mut gpu) = training_pair(dev);
    let (d, b) = (3, 64);
    let mut opt = Adam::new(0.05);
    let z: Vec<f32> = (0..b * d)
        .map(|i| ((i * 7) % 13) as f32 / 6.5 - 1.0)
        .collect();
    let t = vec![1.0f32; b];
    let w = vec![1.0 / b as f32; b];
    let step = |p: &mut Program<f32>, opt: &mut Adam, grad_u: &[f32]| {
        let inputs: [(&str, &[f32]); 6] = [
            ("z", &z),
            ("cond", &t),
            ("grad_u", grad_u),
            ("w", &w),
            ("x_data", &z),
            ("cond_data", &t),
        ];
        p.step(&inputs, opt)
    };
    let names = gpu.param_names();
    let params = |p: &mut Program<f32>| -> Vec<Vec<f64>> {
        names.iter().map(|n| p.param(n).unwrap()).collect()
    };
    step(&mut gpu, &mut opt, &z).unwrap();
    let snap = gpu.snapshot().unwrap();
    let (good, opt_good) = (params(&mut gpu), opt.clone());
    // A NaN in ∇U: an error, and nothing changes on the device.
    let mut nan = z.clone();
    nan[5] = f32::NAN;
    assert!(step(&mut gpu, &mut opt, &nan).is_err());
    assert_eq!(
        params(&mut gpu),
        good,
        "a failed step changed the parameters"
    );
    // Two good steps move them; restoring the snapshot (parameters and moments) and the
    // optimiser's clone repeats the same first step exactly.
    step(&mut gpu, &mut opt, &z).unwrap();
    let once = params(&mut gpu);
    assert_ne!(once, good);
    step(&mut gpu, &mut opt, &z).unwrap();
    gpu.restore(&snap).unwrap();
    opt = opt_good;
    assert_eq!(params(&mut gpu), good);
    step(&mut gpu, &mut opt, &z).unwrap();
    // (Equal to rounding: the view adjoints add atomically, in any order.)
    for (a, b) in params(&mut gpu).iter().flatten().zip(once.iter().flatten()) {
        assert!(codegen::agrees(*a, *b, 1e-5), "restored: {a} against {b}");
    }
}
