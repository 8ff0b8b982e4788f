//! Throughput measurements behind `thermoflow bench ...`.
//!
//! `bench engine`: an MLP 3→64→64→4 (tanh), batch 1024, compiled by our engine, against the
//! same MLP written the straightforward way with ndarray (`dot` → matrixmultiply's sgemm,
//! `mapv(tanh)`, hand-written backprop, the same Adam), in one run; medians of repeats.

use std::time::Instant;

use ndarray::{Array1, Array2, Axis};
use rand::Rng;
use serde_json::json;

use crate::engine::plan::Part;
use crate::engine::{Adam, GraphBuilder, Optimizer, Program};
use crate::error::Result;
use crate::flows::flow::Mode;

const SIZES: [usize; 4] = [3, 64, 64, 4];
const BATCH: usize = 1024;

/// Median wall time in microseconds of `f` over `reps` calls (at least one) after `warm`
/// warm-up calls.
pub fn median_us(warm: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warm {
        f();
    }
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[t.len() / 2]
}

/// Glorot-uniform initial weights for the benchmark MLP (seeded).
pub fn mlp_init(seed: u64) -> Vec<(Vec<f64>, Vec<f64>)> {
    let mut rng = crate::rng::seeded(seed);
    SIZES
        .windows(2)
        .map(|w| {
            let a = (6.0 / (w[0] + w[1]) as f64).sqrt();
            let wt = (0..w[0] * w[1]).map(|_| rng.random_range(-a..a)).collect();
            let b = (0..w[1]).map(|_| rng.random_range(-0.1..0.1)).collect();
            (wt, b)
        })
        .collect()
}

/// The benchmark MLP as an engine program with loss mean((y − target)²).
pub fn mlp_program(init: &[(Vec<f64>, Vec<f64>)]) -> Result<Program<f32>> {
    let g = GraphBuilder::new();
    let x = g.batch_input("x", &[SIZES[0]]);
    let t = g.batch_input("target", &[SIZES[3]]);
    let mut h = x;
    for (l, (w, b)) in init.iter().enumerate() {
        let wv = g.param(&format!("w{l}"), &[SIZES[l], SIZES[l + 1]], w.clone());
        let bv = g.param(&format!("b{l}"), &[SIZES[l + 1]], b.clone());
        h = h.matmul(wv) + bv;
        if l + 1 < init.len() {
            h = h.tanh();
        }
    }
    let loss = (h - t).square().mean_all();
    let (out, loss) = ([h.output("y")], loss.output("loss"));
    Program::compile(g, &out, Some(loss))
}

/// The same MLP with ndarray and hand-written backprop.
pub struct NdMlp {
    w: Vec<Array2<f32>>,
    b: Vec<Array1<f32>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: i32,
}

impl NdMlp {
    /// From initial weights.
    pub fn new(init: &[(Vec<f64>, Vec<f64>)]) -> NdMlp {
        let w: Vec<Array2<f32>> = init
            .iter()
            .enumerate()
            .map(|(l, (w, _))| {
                Array2::from_shape_vec(
                    (SIZES[l], SIZES[l + 1]),
                    w.iter().map(|&v| v as f32).collect(),
                )
                .unwrap()
            })
            .collect();
        let b: Vec<Array1<f32>> = init
            .iter()
            .map(|(_, b)| b.iter().map(|&v| v as f32).collect())
            .collect();
        let sizes: Vec<usize> = w
            .iter()
            .map(|a| a.len())
            .chain(b.iter().map(|a| a.len()))
            .collect();
        NdMlp {
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            w,
            b,
            t: 0,
        }
    }

    /// Forward pass, keeping activations.
    pub fn forward(&self, x: &Array2<f32>) -> Vec<Array2<f32>> {
        let mut acts = vec![x.clone()];
        for l in 0..self.w.len() {
            let mut z = acts[l].dot(&self.w[l]) + &self.b[l];
            if l + 1 < self.w.len() {
                z.mapv_inplace(f32::tanh);
            }
            acts.push(z);
        }
        acts
    }

    /// Forward, backward and an Adam step on mean((y − target)²); returns the loss.
    pub fn train_step(&mut self, x: &Array2<f32>, target: &Array2<f32>, lr: f32) -> f32 {
        let acts = self.forward(x);
        let y = acts.last().unwrap();
        let diff = y - target;
        let n = diff.len() as f32;
        let loss = diff.iter().map(|d| d * d).sum::<f32>() / n;
        let mut delta = diff * (2.0 / n);
        let nl = self.w.len();
        let mut gw = vec![Array2::<f32>::zeros((0, 0)); nl];
        let mut gb = vec![Array1::<f32>::zeros(0); nl];
        for l in (0..nl).rev() {
            gw[l] = acts[l].t().dot(&delta);
            gb[l] = delta.sum_axis(Axis(0));
            if l > 0 {
                let mut d = delta.dot(&self.w[l].t());
                d.zip_mut_with(&acts[l], |d, &a| *d *= 1.0 - a * a);
                delta = d;
            }
        }
        self.t += 1;
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        let params = self
            .w
            .iter_mut()
            .map(|w| w.as_slice_mut().unwrap())
            .chain(self.b.iter_mut().map(|b| b.as_slice_mut().unwrap()));
        let grads: Vec<&[f32]> = gw
            .iter()
            .map(|g| g.as_slice().unwrap())
            .chain(gb.iter().map(|g| g.as_slice().unwrap()))
            .collect();
        for (k, p) in params.enumerate() {
            let (m, v, g) = (&mut self.m[k], &mut self.v[k], grads[k]);
            for i in 0..p.len() {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                p[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
            }
        }
        loss
    }
}

/// Run the engine benchmark and return its JSON report.
pub fn engine_bench(reps: usize) -> Result<serde_json::Value> {
    let init = mlp_init(7);
    let mut rng = crate::rng::seeded(11);
    let x: Vec<f32> = (0..BATCH * SIZES[0])
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    let t: Vec<f32> = (0..BATCH * SIZES[3])
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let xa = Array2::from_shape_vec((BATCH, SIZES[0]), x.clone()).unwrap();
    let ta = Array2::from_shape_vec((BATCH, SIZES[3]), t.clone()).unwrap();

    let mut prog = mlp_program(&init)?;
    let mut nd = NdMlp::new(&init);
    let mut adam = Adam::new(1e-3);
    let lr = adam.lr() as f32;
    let mut err = None;
    let fwd_engine = median_us(5, reps, || {
        if let Err(e) = prog.run(&[("x", &x), ("target", &t)]) {
            err = Some(e);
        }
    });
    let fwd_nd = median_us(5, reps, || {
        std::hint::black_box(nd.forward(&xa));
    });
    let step_engine = median_us(5, reps, || {
        if let Err(e) = prog.step(&[("x", &x), ("target", &t)], &mut adam) {
            err = Some(e);
        }
    });
    let step_nd = median_us(5, reps, || {
        std::hint::black_box(nd.train_step(&xa, &ta, lr));
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok(json!({
        "mlp_forward": {"engine_us": fwd_engine, "ndarray_us": fwd_nd, "ratio": fwd_engine / fwd_nd},
        "mlp_train_step": {"engine_us": step_engine, "ndarray_us": step_nd, "ratio": step_engine / step_nd},
    }))
}

/// Compile a reverse-KL-shaped training step for `flow` with the quadratic energy ½|x|²:
/// loss = mean(log q(x|T) + U(x)/T), x = f(z; T). Inputs `z`, `cond` (T).
pub fn reverse_kl_quadratic_program<T: crate::engine::Scalar>(
    flow: &crate::flows::Flow,
) -> Result<Program<T>> {
    use crate::flows::params::{Declared, Scope};
    let g = GraphBuilder::new();
    let loss = {
        let declared = Declared::default();
        let s = Scope::root(&g, &declared, true);
        let z = g.batch_input("z", &[flow.flow_dim()]);
        let t = g.batch_input("cond", &[1]);
        let (x, lq) = flow.build_sample(&s, z, Some(t));
        let u = x.square().sum(1).mul_scalar(0.5);
        let beta = t.sum(1).recip();
        (lq + u * beta).mean(0).output("loss")
    };
    Program::compile(g, &[], Some(loss))
}

/// The benchmark flow: RQS coupling, 8 layers, conditioner 2×64 tanh, K = 8, B = 5,
/// conditioned on the temperature over [0.5, 3].
pub fn bench_flow(dim: usize) -> Result<crate::flows::Flow> {
    use crate::flows::{builders, Conditioning};
    let cfg = builders::CouplingConfig::default();
    let mut flow = builders::coupling_flow(
        dim,
        Conditioning::Temperature {
            t_min: 0.5,
            t_max: 3.0,
        },
        &cfg,
    )?;
    perturb(&mut flow, 3, 0.05);
    Ok(flow)
}

/// Non-trivial parameters, so that every spline bin and every conditioner unit is exercised
/// (a new flow's last layers are zero: it is the identity, and every gradient that passes
/// through those layers is zero): each parameter moved by a uniform draw from
/// [−`amplitude`, `amplitude`) (`seed`). The benchmarks use seed 3 and 0.05.
pub fn perturb(flow: &mut crate::flows::Flow, seed: u64, amplitude: f64) {
    let mut rng = crate::rng::seeded(seed);
    for l in flow.layers_mut() {
        for (_, set) in crate::flows::Bijection::param_sets_mut(l) {
            for t in &mut set.tensors {
                for v in &mut t.values {
                    *v += rng.random_range(-amplitude..amplitude);
                }
            }
        }
    }
}

/// This machine's FP32 FMA peak in GFLOP/s over all worker threads, measured: every thread
/// runs 12 independent chains of fused multiply-adds on the vectors of the kernels'
/// instruction-set level ([`crate::engine::simd::default_level`]: AVX-512 or AVX2+FMA;
/// 16-wide portable code at the baseline), so that a level forced lower is measured against
/// its own peak; the best of
/// 7 runs of about 30 ms (a peak: a run slowed by another process does not count); 2 flops
/// per FMA lane.
pub fn fma_peak_gflops() -> f64 {
    let threads = rayon::current_num_threads().max(1);
    let iters = 300_000usize;
    let (lanes, _) = fma::chains(iters / 10);
    let mut best = 0.0f64;
    for _ in 0..7 {
        let t0 = Instant::now();
        let sums = rayon::broadcast(|_| fma::chains(iters).1);
        let secs = t0.elapsed().as_secs_f64();
        std::hint::black_box(sums);
        best = best.max((threads * iters * 12 * lanes * 2) as f64 / secs / 1e9);
    }
    best
}

mod fma {
    /// 12 chains × `iters` FMAs on the widest vectors available: (lanes per vector, a sum).
    pub fn chains(iters: usize) -> (usize, f32) {
        #[cfg(target_arch = "x86_64")]
        {
            use crate::engine::simd::{default_level, Level};
            match default_level() {
                // SAFETY: the kernels' level is one the CPU runs (`simd::default_level`).
                Level::Avx512 => return (16, unsafe { avx512(iters) }),
                // SAFETY: as above.
                Level::Avx2 => return (8, unsafe { avx2(iters) }),
                Level::Baseline => {}
            }
        }
        (16, portable(iters))
    }

    fn portable(iters: usize) -> f32 {
        let mut acc = [[1.0f32; 16]; 12];
        let (a, b) = (
            std::hint::black_box(0.999_999f32),
            std::hint::black_box(1e-7f32),
        );
        for _ in 0..iters {
            for row in acc.iter_mut() {
                // A multiply and an add, as the baseline kernels do (`mul_add` without FMA
                // hardware is a library call).
                for v in row.iter_mut() {
                    *v = *v * a + b;
                }
            }
        }
        acc.iter().flatten().sum()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(iters: usize) -> f32 {
        use std::arch::x86_64::*;
        let a = _mm512_set1_ps(std::hint::black_box(0.999_999));
        let b = _mm512_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for v in acc {
            s = _mm512_add_ps(s, v);
        }
        _mm512_reduce_add_ps(s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(iters: usize) -> f32 {
        use std::arch::x86_64::*;
        let a = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let b = _mm256_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut out = [0.0f32; 8];
        let mut s = _mm256_setzero_ps();
        for v in acc {
            s = _mm256_add_ps(s, v);
        }
        _mm256_storeu_ps(out.as_mut_ptr(), s);
        out.iter().sum()
    }
}

/// The CPU's model name (from /proc/cpuinfo where there is one).
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Run the flow benchmark and return its JSON report: per flow, samples/s (sample +
/// log-density, batch 4096) and training steps/s (reverse KL, batch 1024), with the flops
/// per sample counted from the compiled plans, the achieved GFLOP/s and its fraction of the
/// FMA peak measured at start ([`fma_peak_gflops`]).
pub fn flows_bench(reps: usize) -> Result<serde_json::Value> {
    let peak = fma_peak_gflops();
    let mut report = serde_json::Map::new();
    report.insert(
        "machine".into(),
        json!({
            "cpu": cpu_name(),
            "threads": rayon::current_num_threads(),
            "fma_peak_gflops": peak,
            "simd": crate::engine::simd::default_level().name(),
            "simd_detected": crate::engine::simd::detected().name(),
            "command": "thermoflow bench flows",
        }),
    );
    for dim in [2usize, 16] {
        let flow = bench_flow(dim)?;
        let mut rng = crate::rng::seeded(5);
        let temps: Vec<f64> = (0..4096).map(|_| rng.random_range(0.5..3.0)).collect();
        let mut entry = sampling_report(&flow, &temps, reps, peak)?;
        entry.extend(training_report(&flow, &temps[..1024], 2.0, reps, peak)?);
        report.insert(format!("rqs_d{dim}"), serde_json::Value::Object(entry));
    }
    // The lattice flows' sampling (the sweep's and flow-MCMC's cost on lattices) and training
    // (at their training batch): the φ⁴ flow of `bench flows --device` and the sweep's gauge
    // flow, random parameters.
    for (name, flow) in lattice_bench_flows()? {
        let mut rng = crate::rng::seeded(5);
        let temps: Vec<f64> = (0..4096).map(|_| rng.random_range(0.8..1.2)).collect();
        let mut entry = sampling_report(&flow, &temps, reps, peak)?;
        let batch = crate::lattice::LATTICE_BATCH.max(crate::gauge::GAUGE_BATCH);
        entry.extend(training_report(&flow, &temps[..batch], 1.0, reps, peak)?);
        report.insert(name.into(), serde_json::Value::Object(entry));
    }
    Ok(serde_json::Value::Object(report))
}

/// Reverse-KL training steps (Adam, [`reverse_kl_quadratic_program`]) at a batch of
/// `temps.len()`, base draws uniform in [−`z_max`, `z_max`): steps per second (median of
/// `reps`), the batch, flops per step from the compiled plan, GFLOP/s and the fraction of the
/// FMA `peak`.
fn training_report(
    flow: &crate::flows::Flow,
    temps: &[f64],
    z_max: f64,
    reps: usize,
    peak: f64,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut rng = crate::rng::seeded(5);
    let batch = temps.len();
    let mut prog = reverse_kl_quadratic_program(flow)?;
    let mut adam = Adam::new(1e-4).with_clip(10.0);
    let z: Vec<f32> = (0..batch * flow.flow_dim())
        .map(|_| rng.random_range(-z_max..z_max) as f32)
        .collect();
    let t: Vec<f32> = temps.iter().map(|&v| v as f32).collect();
    let mut err = None;
    let step_us = median_us(2, reps.max(3), || {
        if let Err(e) = prog.step(&[("z", &z), ("cond", &t)], &mut adam) {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    let step_flops = prog.flops(batch, true)?;
    let steps_per_s = 1.0 / (step_us * 1e-6);
    let g_step = step_flops * steps_per_s / 1e9;
    Ok(fields([
        ("train_steps_per_s", json!(steps_per_s)),
        ("train_batch", json!(batch)),
        ("train_flops_per_step", json!(step_flops)),
        ("train_gflops", json!(g_step)),
        ("train_fraction_of_fma_peak", json!(g_step / peak)),
    ]))
}

/// Sampling with log-density of `temps.len()` samples, one per temperature (median of `reps`
/// after a small warm-up run that compiles the program): samples per second, the batch, the
/// flow's parameters, flops per sample from the compiled plan, GFLOP/s and the fraction of the
/// FMA `peak`.
fn sampling_report(
    flow: &crate::flows::Flow,
    temps: &[f64],
    reps: usize,
    peak: f64,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut rng = crate::rng::seeded(5);
    let mut err = None;
    flow.sample_and_log_prob(16, &temps[..16], &mut rng)?;
    let us = median_us(2, reps.max(3), || {
        if let Err(e) = flow.sample_and_log_prob(temps.len(), temps, &mut rng) {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    let n = temps.len();
    let flops = flow.compile::<f32>(Mode::Sample)?.flops(n, false)? / n as f64;
    let per_s = n as f64 / (us * 1e-6);
    let gflops = flops * per_s / 1e9;
    Ok(fields([
        ("sample_log_prob_per_s", json!(per_s)),
        ("sample_batch", json!(n)),
        ("n_params", json!(flow.n_params())),
        ("sample_flops_per_sample", json!(flops)),
        ("sample_gflops", json!(gflops)),
        ("sample_fraction_of_fma_peak", json!(gflops / peak)),
    ]))
}

/// A JSON object's fields from (name, value) pairs.
fn fields<const N: usize>(
    pairs: [(&str, serde_json::Value); N],
) -> serde_json::Map<String, serde_json::Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The lattice flows the benchmarks time, with random parameters ([`perturb`]): the φ⁴ flow
/// (L = 8, 12 checkerboard couplings, 8 channels), the sweep's U(1) gauge flow (L = 8, 16
/// couplings, 8 channels in 2 hidden convolutions, one 8-bin spline per plaquette; `mcmc`'s has
/// two) and the sweep's XY spin flow
/// (L = 8, 8 checkerboard couplings in spin 0's frame, 8 channels in 2 hidden convolutions, two
/// 8-bin splines per spin: [`crate::gauge::AngleFlowConfig::xy`]).
pub fn lattice_bench_flows() -> Result<Vec<(&'static str, crate::flows::Flow)>> {
    use crate::flows::{builders, Conditioning};
    let cond = Conditioning::Temperature {
        t_min: 0.8,
        t_max: 1.25,
    };
    let mut phi4 = builders::lattice_flow(8, cond, 12, 8, 1, 0)?;
    perturb(&mut phi4, 3, 0.05);
    let mut u1 = builders::gauge_flow(8, cond, 16, 8, 2, 8, 1, 0)?;
    perturb(&mut u1, 3, 0.05);
    let mut xy = builders::spin_flow(8, cond, 8, 8, 2, 8, 2, 0)?;
    perturb(&mut xy, 3, 0.05);
    Ok(vec![
        ("phi4_lattice_L8", phi4),
        ("u1_gauge_L8", u1),
        ("xy_spin_L8", xy),
    ])
}

/// Sweeps of the long tempering run that serves as the reference where no exact one exists
/// (five times the witness's).
pub const REFERENCE_SWEEPS: usize = 100_000;

/// Chains of the HMC reference for lattice fields.
pub const HMC_REFERENCE_CHAINS: usize = 8;
/// Trajectories per chain of the HMC reference (10 leapfrog steps each).
pub const HMC_REFERENCE_TRAJECTORIES: usize = 80_000;

/// C_V = Var(U)/T² at `t` from long HMC, with its batch-means error (20 batches per chain).
fn hmc_cv(energy: &dyn crate::systems::Energy, t: f64, seed: u64) -> Result<(f64, f64)> {
    use crate::mcmc::{batch_means, hmc, HmcConfig};
    let hc = HmcConfig {
        n_trajectories: HMC_REFERENCE_TRAJECTORIES,
        burn_in: 1000,
        n_chains: HMC_REFERENCE_CHAINS,
        seed,
        ..Default::default()
    };
    let start = ndarray::Array2::zeros((HMC_REFERENCE_CHAINS, energy.dim()));
    let run = hmc(energy, t, &start, &hc, &|x| vec![energy.energy(x)])?;
    let cv = batch_means(&run.series[0], 20, |c| {
        let m = c.iter().sum::<f64>() / c.len() as f64;
        c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (c.len() as f64 * t * t)
    });
    Ok((cv.value, cv.se))
}

/// Time to accuracy of the sweep with `--cv-tol cv_tol` on each of `systems`: coupling-flow
/// systems over [0.5, 3] at 32 temperatures, lattice fields over [0.8, 1.25] at 8, chains over
/// [0.5, 2] at 8, clusters over [0.15, 0.4] at 8 (LJ13's melting peak), with `train_seconds` of
/// training or the system's default. For each: the wall time from start to the finished
/// estimates (training, witness, estimation rounds, repairs), its parts, the largest relative
/// C_V error against the exact reference, or where none exists against long HMC for a lattice
/// field and long parallel tempering otherwise (the witness's sampler, [`REFERENCE_SWEEPS`]
/// sweeps; neither timed), over all temperatures and
/// over the trusted ones, whether every temperature is trusted, per temperature C_V beside the
/// reference (relative error, z with both errors, trusted, method), and the heat-capacity peak
/// on the grid beside the reference's.
pub fn sweep_time_to_accuracy(
    systems: &[String],
    cv_tol: f64,
    train_seconds: Option<f64>,
) -> Result<serde_json::Value> {
    // Every name checked before the first (long) run.
    let energies = systems
        .iter()
        .map(|s| crate::systems::build::<&str>(s, &[]))
        .collect::<Result<Vec<_>>>()?;
    let mut runs = Vec::new();
    for (system, energy) in systems.iter().zip(energies) {
        let (t_min, t_max, temps) = match energy.structure() {
            crate::systems::Structure::Generic => (0.5, 3.0, 32),
            crate::systems::Structure::Lattice(_) => (0.8, 1.25, 8),
            crate::systems::Structure::Chain(_) => (0.5, 2.0, 8),
            crate::systems::Structure::Cluster(_) => (0.15, 0.4, 8),
            crate::systems::Structure::Gauge(_) => (0.2, 1.0, 8),
            crate::systems::Structure::Spins(_) => (0.7, 1.5, 8),
        };
        let cfg = crate::sweep::SweepConfig {
            system: system.clone(),
            t_min,
            t_max,
            temps,
            cv_tol: Some(cv_tol),
            train_seconds,
            progress: false,
            ..Default::default()
        };
        let t0 = std::time::Instant::now();
        let (r, _, _) = crate::sweep::run(&cfg)?;
        let wall = t0.elapsed().as_secs_f64();
        // The reference C_V per temperature, with its standard error (0 where exact).
        let (ref_cv, reference): (Vec<(f64, f64)>, String) = match (&r.exact, energy.structure()) {
            (Some(e), _) => (e.cv.iter().map(|&c| (c, 0.0)).collect(), "exact".into()),
            // A lattice field: long HMC (what `tests/lattice_sweep.rs` holds the sweep to).
            (None, crate::systems::Structure::Lattice(_)) => {
                let cv = r
                    .temperatures
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| hmc_cv(energy.as_ref(), t, 100 + i as u64))
                    .collect::<Result<Vec<_>>>()?;
                let note = format!(
                    "HMC, {HMC_REFERENCE_CHAINS} chains × {HMC_REFERENCE_TRAJECTORIES} trajectories"
                );
                (cv, note)
            }
            (None, _) => {
                let w = crate::sweep::witness::run_witness(
                    energy.as_ref(),
                    &r.temperatures,
                    &crate::sweep::witness::WitnessConfig {
                        sweeps: REFERENCE_SWEEPS,
                        ladders: 16,
                        seed: 0xbe7c,
                    },
                )?;
                let cv = (0..temps)
                    .map(|i| {
                        w.rung_of(i).map_or((f64::NAN, f64::NAN), |k| {
                            (w.thermo[k].cv.value, w.thermo[k].cv.se)
                        })
                    })
                    .collect();
                let note = format!(
                    "parallel tempering, {REFERENCE_SWEEPS} sweeps, {} round trips",
                    w.round_trips
                );
                (cv, note)
            }
        };
        let rel = |i: usize| ((r.cv[i] - ref_cv[i].0) / ref_cv[i].0).abs();
        let worst = |keep: &dyn Fn(usize) -> bool| {
            (0..temps)
                .filter(|&i| keep(i))
                .map(rel)
                .fold(
                    0.0,
                    |a: f64, b| if b.is_nan() { f64::INFINITY } else { a.max(b) },
                )
        };
        let err = worst(&|_| true);
        let err_trusted = worst(&|i| r.trusted[i]);
        let points: Vec<serde_json::Value> = (0..temps)
            .map(|i| {
                let (c, se) = ref_cv[i];
                let z = (r.cv[i] - c).abs() / (r.cv_se[i].powi(2) + se * se).sqrt();
                json!({
                    "t": r.temperatures[i],
                    "cv": r.cv[i],
                    "cv_se": r.cv_se[i],
                    "reference_cv": c,
                    "reference_cv_se": se,
                    "rel_error": rel(i),
                    "z": z,
                    "trusted": r.trusted[i],
                    "method": r.method[i],
                })
            })
            .collect();
        // The heat-capacity peak on the grid: the sweep's and the reference's.
        let argmax =
            |v: &dyn Fn(usize) -> f64| (0..temps).fold(0, |b, i| if v(i) > v(b) { i } else { b });
        let (p, q) = (argmax(&|i| r.cv[i]), argmax(&|i| ref_cv[i].0));
        let peak = json!({
            "t": r.temperatures[p],
            "cv": r.cv[p],
            "cv_se": r.cv_se[p],
            "trusted": r.trusted[p],
            "reference_t": r.temperatures[q],
            "reference_cv": ref_cv[q].0,
            "reference_cv_se": ref_cv[q].1,
        });
        let all_trusted = r.trusted.iter().all(|&t| t);
        let n_trusted = r.trusted.iter().filter(|&&t| t).count();
        for (i, pt) in points.iter().enumerate() {
            eprintln!(
                "[bench] {system}: T = {:.3}: C_V {:.4} ± {:.4} vs {:.4} ± {:.4} ({:.2} %, z {:.2}), {}{}",
                r.temperatures[i],
                r.cv[i],
                r.cv_se[i],
                ref_cv[i].0,
                ref_cv[i].1,
                100.0 * rel(i),
                pt["z"].as_f64().unwrap_or(f64::NAN),
                r.method[i],
                if r.trusted[i] { ", trusted" } else { "" }
            );
        }
        eprintln!(
            "[bench] {system}: {wall:.1} s to C_V within {:.2} % (max |ΔC_V|/C_V = {:.2} % against {reference}, {:.2} % over the {n_trusted} trusted), all trusted: {all_trusted}",
            100.0 * cv_tol,
            100.0 * err,
            100.0 * err_trusted
        );
        runs.push(json!({
            "system": system,
            "t_range": [t_min, t_max],
            "temps": temps,
            "wall_seconds": wall,
            "train_seconds": r.train.seconds,
            "train_steps": r.train.steps,
            "witness_seconds": r.witness.as_ref().map(|w| w.seconds),
            "estimate_seconds": r.estimate_seconds,
            "samples_total": r.samples_used.iter().sum::<usize>(),
            "estimate_samples_per_s": r.estimate_samples_per_s,
            "max_cv_rel_error": err.is_finite().then_some(err),
            "max_cv_rel_error_trusted": err_trusted.is_finite().then_some(err_trusted),
            "reference": reference,
            "within_2pct": err.is_finite().then_some(err < 0.02),
            "all_trusted": all_trusted,
            "trusted": n_trusted,
            "points": points,
            "peak": peak,
            "repairs": r.repairs,
            "verdict": r.verdict,
        }));
    }
    let budget = train_seconds.map_or(String::new(), |s| format!(" --train-seconds {s}"));
    let names: String = systems.iter().map(|s| format!(" --system {s}")).collect();
    Ok(json!({
        "cv_tol": cv_tol,
        "threads": rayon::current_num_threads(),
        "command": format!("thermoflow bench sweep --cv-tol {cv_tol}{budget}{names}"),
        "runs": runs,
    }))
}

/// Flow-MCMC against HMC on φ⁴ (L = 8, m² = −4, λ = 8, T = 1): HMC (8 chains × 20 000
/// trajectories of 10 leapfrog steps) and a lattice flow trained for `train_seconds`, then
/// flow-MCMC (64 chains × `flow_steps` independence steps). For both: χ₂, ⟨|M|⟩/V with errors,
/// acceptance, τ_int(|M|), and its cost in energy evaluations and in seconds.
pub fn mcmc_bench(train_seconds: f64, flow_steps: usize) -> Result<serde_json::Value> {
    use crate::lattice::{phi4_observables, summarize_phi4, train_phi4_flow, Phi4FlowConfig};
    use crate::mcmc::{flow_mcmc, hmc, FlowMcmcConfig, HmcConfig};
    let phi = crate::systems::Phi4::new(8, -4.0, 8.0)?;
    let observe = |x: &[f64]| phi4_observables(&phi, x);
    let hc = HmcConfig {
        n_trajectories: 20_000,
        burn_in: 1000,
        n_chains: 8,
        ..Default::default()
    };
    let h = summarize_phi4(&hmc(&phi, 1.0, &Array2::zeros((8, 64)), &hc, &observe)?)?;
    let mut fc = Phi4FlowConfig::new(1.0);
    fc.train.seconds = Some(train_seconds);
    fc.train.steps = None;
    let mut bar = crate::train::Progress::new(5.0);
    let (flow, report) = train_phi4_flow(&phi, &fc, &mut [&mut bar])?;
    let mc = FlowMcmcConfig {
        n_steps: flow_steps,
        max_steps: None,
        burn_in: 50,
        n_chains: 64,
        local_every: 0,
        local_step: 0.1,
        seed: 1,
    };
    let f = summarize_phi4(&flow_mcmc(
        &flow,
        &[1.0],
        &phi,
        1.0,
        &mc,
        &observe,
        &mut [&mut bar],
    )?)?;
    Ok(json!({
        "system": "phi4",
        "params": {"L": 8, "m2": -4.0, "lambda": 8.0, "T": 1.0},
        "published_chi2": 0.75,
        "hmc": h,
        "flow": f,
        "training": report,
        "flow_over_hmc_tau_evaluations": f.tau_abs_m_evaluations / h.tau_abs_m_evaluations,
        "flow_over_hmc_tau_seconds": f.tau_abs_m_seconds / h.tau_abs_m_seconds,
    }))
}

/// One program timed on the CPU backend and on the GPU on the same inputs.
struct GpuBesideCpu {
    cpu_us: f64,
    gpu_us: f64,
    /// The first run on the device, compilation included.
    first_s: f64,
    /// The largest [`crate::engine::codegen::difference`] of what a run returns.
    diff: f64,
}

/// Median microseconds of `reps` runs of `prog` (with gradients where `train`) on the CPU
/// backend and of its plan on `device`, each returning what a run returns (the outputs; the
/// loss and gradients when training), after a first run that compiles the plan; and how far
/// the device's results are from the CPU's.
fn gpu_beside_cpu(
    device: &crate::engine::device::Device,
    prog: &mut Program<f32>,
    inputs: &[(&str, &[f32])],
    train: bool,
    reps: usize,
) -> Result<GpuBesideCpu> {
    use crate::engine::codegen::difference;
    let mut err = None;
    let cpu_us = median_us(1, reps.max(3), || {
        let run = if train {
            prog.run_with_grads(inputs).map(|_| ())
        } else {
            prog.run(inputs).map(|_| ())
        };
        if let Err(e) = run {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    prog.inspect(inputs, train, |plan, store, read| {
        let mut session = device.session();
        let key = (0, train);
        let t0 = std::time::Instant::now();
        let got = session.run(key, plan, store, read, Part::All)?;
        let first_s = t0.elapsed().as_secs_f64();
        let mut failed = None;
        let gpu_us = median_us(0, reps.max(3), || {
            if let Err(e) = session.run(key, plan, store, read, Part::All) {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let mut diff = 0.0f64;
        for (g, &n) in got.iter().zip(read) {
            for (g, c) in g.iter().zip(plan.buffer(store, n)) {
                diff = diff.max(difference(*g as f64, *c as f64));
            }
        }
        Ok(GpuBesideCpu {
            cpu_us,
            gpu_us,
            first_s,
            diff,
        })
    })?
}

/// Sampling throughput of flows on a device ([`crate::engine::backend::Backend`]: an NVIDIA
/// GPU with feature `cuda`, a wgpu adapter with feature `wgpu`) beside the CPU backend, the
/// same programs on the same inputs: the default-size RQS coupling flows of
/// [`flows_bench`] (d = 2, 16) and the φ⁴ lattice flow (L = 8, 12 checkerboard couplings, 8
/// channels; random parameters), at batches 4096 and 65 536. The GPU time is a whole plan on
/// the device with the inputs' upload and the outputs' download (z drawn on the host, as on
/// the CPU path, and not timed on either); medians of `reps` runs after a warm-up. Every
/// output is compared with the CPU's: `max_rel_diff` is the largest |gpu − cpu|/(1 + |cpu|).
/// Then the training step's plan of [`flows_bench`] (batch 1024: forward, loss, every
/// gradient, compared on the loss and gradients; the optimiser's update, which training appends
/// to the plan on the device, is not part of it).
pub fn flows_bench_gpu(
    gpu: &crate::engine::device::Device,
    reps: usize,
) -> Result<serde_json::Value> {
    let mut report = serde_json::Map::new();
    report.insert(
        "machine".into(),
        json!({
            "gpu": gpu.name(),
            "cpu": cpu_name(),
            "cpu_threads": rayon::current_num_threads(),
            "command": "thermoflow bench flows --device cuda|wgpu",
        }),
    );
    let lattice = lattice_bench_flows()?.swap_remove(0).1;
    let flows = [
        ("rqs_d2", bench_flow(2)?),
        ("rqs_d16", bench_flow(16)?),
        ("phi4_lattice_L8", lattice),
    ];
    for (name, flow) in &flows {
        let mut prog = flow.compile::<f32>(Mode::Sample)?;
        let mut rows = Vec::new();
        for batch in [4096usize, 65_536] {
            let mut rng = crate::rng::seeded(5);
            let z: Vec<f32> = (0..batch * flow.dim())
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let t: Vec<f32> = (0..batch).map(|_| rng.random_range(0.9..1.2)).collect();
            let r = match gpu_beside_cpu(gpu, &mut prog, &[("z", &z), ("cond", &t)], false, reps) {
                Ok(r) => r,
                // A batch the device cannot hold (a binding limit): said in its row.
                Err(e) => {
                    rows.push(json!({"batch": batch, "error": e.to_string()}));
                    continue;
                }
            };
            rows.push(json!({
                "batch": batch,
                "cpu_samples_per_s": batch as f64 / (r.cpu_us * 1e-6),
                "gpu_samples_per_s": batch as f64 / (r.gpu_us * 1e-6),
                "speedup": r.cpu_us / r.gpu_us,
                "gpu_first_run_s": r.first_s,
                "max_rel_diff": r.diff,
            }));
        }
        report.insert(
            name.to_string(),
            json!({"n_params": flow.n_params(), "dim": flow.dim(), "runs": rows}),
        );
    }
    // The training step's plan (forward, loss, every gradient) of `bench flows`, without the
    // optimiser's update (training appends it on the device; not timed here).
    for dim in [2usize, 16] {
        let flow = bench_flow(dim)?;
        let mut prog = reverse_kl_quadratic_program::<f32>(&flow)?;
        let batch = 1024;
        let mut rng = crate::rng::seeded(5);
        let z: Vec<f32> = (0..batch * dim)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let t: Vec<f32> = (0..batch).map(|_| rng.random_range(0.5..3.0)).collect();
        let r = gpu_beside_cpu(gpu, &mut prog, &[("z", &z), ("cond", &t)], true, reps)?;
        report.insert(
            format!("rqs_d{dim}_train_plan"),
            json!({
                "batch": batch,
                "cpu_plans_per_s": 1e6 / r.cpu_us,
                "gpu_plans_per_s": 1e6 / r.gpu_us,
                "speedup": r.cpu_us / r.gpu_us,
                "gpu_first_run_s": r.first_s,
                "max_rel_diff": r.diff,
                "note": "forward, loss and every gradient, the loss and gradients downloaded; the optimiser's update (which training runs on the device too) is not timed",
            }),
        );
    }
    Ok(serde_json::Value::Object(report))
}
