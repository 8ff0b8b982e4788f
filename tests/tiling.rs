//! Row-tiled execution: the flows' sampling, density and training programs run tiled over
//! batch rows and whole, step by step, give the same numbers (to f32 rounding); parameter
//! gradients of a batched loss through spline and affine couplings (tiled and untiled, on
//! all worker threads, in f64) match central finite differences, and the f32 ones match
//! those; and the tiling really happens. Every instruction-set level of the kernels this CPU
//! runs (`engine::simd`) gives the baseline's numbers, sampling, density and training.

use rand::Rng;
use thermoflow::bench::{bench_flow, lattice_bench_flows, reverse_kl_quadratic_program};
use thermoflow::engine::simd::Level;
use thermoflow::engine::Program;
use thermoflow::flows::builders::{coupling_flow, CouplingConfig};
use thermoflow::flows::flow::Mode;
use thermoflow::flows::Transformer;
use thermoflow::flows::{Activation, Conditioning, Flow};

fn inputs(dim: usize, batch: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = thermoflow::rng::seeded(seed);
    // Some coordinates beyond the spline bound (identity tails) as well as inside.
    let z = (0..batch * dim)
        .map(|_| rng.random_range(-6.0..6.0))
        .collect();
    let t = (0..batch).map(|_| rng.random_range(0.5..3.0)).collect();
    (z, t)
}

fn assert_close(name: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{name}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())),
            "{name}[{i}]: tiled {x}, untiled {y}"
        );
    }
}

#[test]
fn tiled_and_untiled_execution_agree_on_every_flow_program() {
    for dim in [2usize, 16] {
        let flow = bench_flow(dim).unwrap();
        let batch = 1000; // not a multiple of the tile: a short last tile
        let (z, t) = inputs(dim, batch, dim as u64);
        for (mode, input, first) in [(Mode::Sample, "z", "x"), (Mode::Density, "x", "z")] {
            let mut p = flow.compile::<f32>(mode).unwrap();
            let (steps, tiled, segments) = p.tiling(batch, false).unwrap();
            assert!(
                segments >= 1 && tiled * 10 >= steps * 9,
                "{steps} steps, {tiled} tiled"
            );
            let a = p.run(&[(input, &z), ("cond", &t)]).unwrap();
            p.set_tiled(false);
            let b = p.run(&[(input, &z), ("cond", &t)]).unwrap();
            for name in [first, "log_q"] {
                let what = format!("d={dim} {mode:?} {name}");
                assert_close(&what, a.get(name).unwrap(), b.get(name).unwrap(), 1e-5);
            }
        }
        let mut p: Program<f32> = reverse_kl_quadratic_program(&flow).unwrap();
        let (steps, tiled, _) = p.tiling(batch, true).unwrap();
        // Untiled: constants, the weights transposed once for the input gradients' gemms, and
        // the parameter gradients (sums and gemms over the batch): 225 of 377 steps tiled.
        assert!(
            tiled * 20 >= steps * 11,
            "training: {steps} steps, {tiled} tiled"
        );
        training_agrees(&mut p, dim, batch);
    }
}

/// The kernels compiled for each instruction-set level this CPU runs (AVX-512 machines test
/// AVX2 too) against the baseline's, on the bench flows (d = 2 and 16: gemms of 64 hidden
/// units, which leave partial register blocks at every level's shape, and the spline):
/// sampling, density and a training step's loss and every gradient, f32, agree to rounding
/// (FMA or not).
#[test]
fn every_instruction_set_level_gives_the_baselines_numbers() {
    let levels: Vec<Level> = Level::ALL.into_iter().filter(|l| l.supported()).collect();
    eprintln!("[levels] {levels:?}");
    for dim in [2usize, 16] {
        let flow = bench_flow(dim).unwrap();
        let batch = 301;
        let (z, t) = inputs(dim, batch, 7 + dim as u64);
        levels_agree(&flow, &format!("d={dim}"), &z, &t, &levels, 1e-5);
        let mut p: Program<f32> = reverse_kl_quadratic_program(&flow).unwrap();
        let mut run = |level: Level| {
            p.set_simd(level).unwrap();
            let (loss, _, grads) = p.run_with_grads(&[("z", &z), ("cond", &t)]).unwrap();
            (loss, grads)
        };
        let base = run(Level::Baseline);
        for &level in &levels[1..] {
            let what = format!("d={dim} {level:?} (against the baseline)");
            same_loss_and_gradients(&what, &run(level), &base);
        }
    }
    // A level the CPU lacks is an error, not an illegal instruction.
    if let Some(&missing) = Level::ALL.iter().find(|l| !l.supported()) {
        let mut p = bench_flow(2).unwrap().compile::<f32>(Mode::Sample).unwrap();
        assert!(p.set_simd(missing).is_err());
    }
}

/// Sampling and density of `flow` at every level in `levels` (the baseline first) agree with
/// the baseline's to rounding.
fn levels_agree(flow: &Flow, what: &str, z: &[f32], t: &[f32], levels: &[Level], tol: f32) {
    for (mode, input, first) in [(Mode::Sample, "z", "x"), (Mode::Density, "x", "z")] {
        let mut p = flow.compile::<f32>(mode).unwrap();
        flow.write_params(&mut p).unwrap();
        p.set_simd(Level::Baseline).unwrap();
        assert_eq!(p.simd(), Level::Baseline);
        let base = p.run(&[(input, z), ("cond", t)]).unwrap();
        for &level in &levels[1..] {
            p.set_simd(level).unwrap();
            let r = p.run(&[(input, z), ("cond", t)]).unwrap();
            for name in [first, "log_q"] {
                let what = format!("{what} {mode:?} {name} {level:?}");
                assert_close(&what, r.get(name).unwrap(), base.get(name).unwrap(), tol);
            }
        }
    }
}

/// The lattice and gauge flows' convolutions are gemms of 2 and 8 columns, which the AVX
/// levels run with blocks of their own (`engine::simd`): on the benchmarks' lattice flows (L = 8,
/// every parameter moved at random, so the last convolution, zero at initialisation, does not
/// hide the others), each level gives the baseline's numbers to rounding.
#[test]
fn the_lattice_flows_narrow_gemms_give_the_baselines_numbers_at_every_level() {
    let levels: Vec<Level> = Level::ALL.into_iter().filter(|l| l.supported()).collect();
    for (name, flow) in lattice_bench_flows().unwrap() {
        let (mut z, t) = inputs(flow.dim(), 97, 21);
        if name.starts_with("u1") || name.starts_with("xy") {
            // Link and spin angles in [−π, π).
            z.iter_mut().for_each(|v| *v *= std::f32::consts::PI / 6.0);
        }
        levels_agree(&flow, name, &z, &t, &levels, 1e-5);
    }
}

/// Tiles of a single row (a batch smaller than two tiles per worker): the scatters of
/// gradients into one column of a row run on each row alone.
#[test]
fn one_row_tiles_agree_with_untiled_execution() {
    let flow = bench_flow(2).unwrap();
    for batch in [2usize, 3, 5] {
        let mut p: Program<f32> = reverse_kl_quadratic_program(&flow).unwrap();
        training_agrees(&mut p, 2, batch);
    }
}

/// Loss and gradients of a training program, tiled and then untiled, agree.
fn training_agrees(p: &mut Program<f32>, dim: usize, batch: usize) {
    let (z, t) = inputs(dim, batch, dim as u64);
    let run = |p: &mut Program<f32>| {
        let (loss, _, grads) = p.run_with_grads(&[("z", &z), ("cond", &t)]).unwrap();
        (loss, grads)
    };
    let tiled = run(p);
    p.set_tiled(false);
    let untiled = run(p);
    let what = format!("d={dim} batch {batch} (tiled against untiled)");
    same_loss_and_gradients(&what, &tiled, &untiled);
}

/// A training step's loss and gradients agree with a reference run's: the loss within 10⁻⁵
/// relative, each gradient element within 10⁻⁴ of its tensor's largest reference element.
fn same_loss_and_gradients(
    what: &str,
    (la, ga): &(f64, Vec<Vec<f64>>),
    (lb, gb): &(f64, Vec<Vec<f64>>),
) {
    assert!(
        (la - lb).abs() <= 1e-5 * (1.0 + la.abs().min(lb.abs())),
        "{what}: loss {la} vs {lb}"
    );
    for (k, (x, y)) in ga.iter().zip(gb).enumerate() {
        let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (u, v)) in x.iter().zip(y).enumerate() {
            assert!(
                (u - v).abs() <= 1e-4 * (1e-3 + scale),
                "{what}: gradient {k}[{i}] {u} vs {v}"
            );
        }
    }
}

/// A small conditioned coupling flow with non-trivial parameters.
fn small_flow(dim: usize, transformer: Transformer) -> Flow {
    let cfg = CouplingConfig {
        layers: 3,
        hidden: 6,
        depth: 2,
        activation: Activation::Tanh,
        transformer,
        seed: 4,
    };
    let cond = Conditioning::Temperature {
        t_min: 0.5,
        t_max: 3.0,
    };
    let mut flow = coupling_flow(dim, cond, &cfg).unwrap();
    let mut rng = thermoflow::rng::seeded(9);
    for l in flow.layers_mut() {
        for (_, set) in thermoflow::flows::Bijection::param_sets_mut(l) {
            for t in &mut set.tensors {
                for v in &mut t.values {
                    *v += rng.random_range(-0.4..0.4);
                }
            }
        }
    }
    flow
}

/// ∂loss/∂θ of the batched reverse-KL loss (mean over 96 rows of log q + U/T) against central
/// differences, for a sample of parameters of every tensor, in f64, tiled and untiled.
#[test]
fn batched_parameter_gradients_match_finite_differences_tiled_and_untiled() {
    let spline = Transformer::Spline {
        bins: 5,
        bound: 3.0,
    };
    for (dim, transformer) in [(3usize, spline), (4, Transformer::Affine)] {
        let flow = small_flow(dim, transformer);
        let batch = 96;
        let (z, t) = inputs(dim, batch, 11);
        let z: Vec<f64> = z.iter().map(|&v| v as f64 * 0.5).collect();
        let t: Vec<f64> = t.iter().map(|&v| v as f64).collect();
        for tiled in [true, false] {
            let mut p: Program<f64> = reverse_kl_quadratic_program(&flow).unwrap();
            p.set_tiled(tiled);
            if tiled {
                let (_, n_tiled, _) = p.tiling(batch, true).unwrap();
                assert!(n_tiled > 0, "nothing tiled");
            }
            let ins = [("z", z.as_slice()), ("cond", t.as_slice())];
            let (_, _, grads) = p.run_with_grads(&ins).unwrap();
            let names = p.param_names();
            let mut checked = 0;
            for (name, g) in names.iter().zip(&grads) {
                let base = p.param(name).unwrap();
                let stride = (base.len() / 4).max(1);
                for i in (0..base.len()).step_by(stride) {
                    let h = 1e-6;
                    let mut v = base.clone();
                    v[i] = base[i] + h;
                    p.set_param(name, &v).unwrap();
                    let lp = p.run_with_grads(&ins).unwrap().0;
                    v[i] = base[i] - h;
                    p.set_param(name, &v).unwrap();
                    let lm = p.run_with_grads(&ins).unwrap().0;
                    p.set_param(name, &base).unwrap();
                    let fd = (lp - lm) / (2.0 * h);
                    assert!(
                        (g[i] - fd).abs() <= 1e-5 * (1.0 + fd.abs()),
                        "dim {dim} tiled {tiled}: ∂/∂{name}[{i}] = {}, finite difference {fd}",
                        g[i]
                    );
                    checked += 1;
                }
            }
            assert!(checked >= 4 * names.len().min(12), "only {checked} checked");
            // f32, tiled or not, against these f64 gradients (which match finite differences).
            let mut p32: Program<f32> = reverse_kl_quadratic_program(&flow).unwrap();
            p32.set_tiled(tiled);
            let (z32, t32): (Vec<f32>, Vec<f32>) = (
                z.iter().map(|&v| v as f32).collect(),
                t.iter().map(|&v| v as f32).collect(),
            );
            let (_, _, g32) = p32.run_with_grads(&[("z", &z32), ("cond", &t32)]).unwrap();
            for (name, (a, b)) in names.iter().zip(g32.iter().zip(&grads)) {
                let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (x - y).abs() <= 2e-3 * (1e-2 + scale),
                        "dim {dim} tiled {tiled}: f32 ∂/∂{name}[{i}] = {x}, f64 {y}"
                    );
                }
            }
        }
    }
}
