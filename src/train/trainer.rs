//! The trainer: forward-KL warm start on parallel-tempering samples, then reverse KL with a
//! forward-KL term, per-sample log-uniform temperatures, Adam with a cosine learning-rate
//! schedule and gradient clipping, a guard against non-finite steps, and observers.
//!
//! Guard: parameters and the optimiser's state (Adam's moments and step count) are
//! snapshotted every 25 good steps; a step whose loss or gradient is not finite is discarded,
//! both are restored, the learning-rate scale s is halved for the rest of training, and the
//! event is reported to the observers (never silent). More than 20 such events end training
//! with an error.
//!
//! Schedule: lr(f) = s · lr₀ (0.05 + 0.95 · ½(1 + cos πf)), f the fraction of the budget used
//! (the larger of elapsed/seconds and steps/step budget), s = 2^−(non-finite events).
//!
//! Forward-KL data come from parallel tempering whose ladders start at dispersed points (the
//! lowest-energy of a few random probes each, over the system's box when it has one), so the
//! data do not share the blind spot of a single start.

use std::time::Instant;

use ndarray::Array2;
use rand::Rng;
use serde::Serialize;

use super::losses::combined_program;
use crate::engine::{Adam, Optimizer};
use crate::error::{input_err, Error, Result};
use crate::flows::{Conditioning, CouplingConfig, Flow};
use crate::mcmc::{hmc_samples, parallel_tempering, HmcConfig, PtConfig};
use crate::observe::{Observer, StepMetrics};
use crate::systems::{check_temperature, Energy};

/// Training settings.
#[derive(Clone, Debug, Serialize)]
pub struct TrainConfig {
    /// Lowest temperature.
    pub t_min: f64,
    /// Highest temperature.
    pub t_max: f64,
    /// Optional wall-clock limit in seconds (training stops at whichever of seconds/steps comes
    /// first; with it the result depends on the machine's speed).
    pub seconds: Option<f64>,
    /// Step budget.
    pub steps: Option<usize>,
    /// Samples per step.
    pub batch: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// Global gradient-norm clip.
    pub clip: f64,
    /// Weight λ of the forward-KL term after the warm start (0: pure reverse KL).
    pub forward_weight: f64,
    /// Fraction of the budget spent on forward KL alone (0 disables the warm start).
    pub warm_fraction: f64,
    /// Parallel-tempering sweeps for the forward-KL data (0: no data, pure reverse KL).
    pub pt_sweeps: usize,
    /// Weight α of the mass-covering α = 2 divergence term in the energy-based loss
    /// ((1 − α) reverse KL + α log E_q[(p/q)²]; 0: reverse KL only).
    pub mass_covering: f64,
    /// Seed.
    pub seed: u64,
}

impl TrainConfig {
    /// Defaults for a range: 5000 steps (no wall-time limit), batch 512, lr 2·10⁻³, clip 10, λ = 0.5, 15 % warm start,
    /// 4000 tempering sweeps of data, no mass-covering term.
    pub fn new(t_min: f64, t_max: f64) -> TrainConfig {
        TrainConfig {
            t_min,
            t_max,
            seconds: None,
            steps: Some(5000),
            batch: 512,
            lr: 2e-3,
            clip: 10.0,
            forward_weight: 0.5,
            warm_fraction: 0.15,
            pt_sweeps: 4000,
            mass_covering: 0.0,
            seed: 0,
        }
    }

    /// Defaults for one temperature T: the range [T/1.25, 1.25 T] around it (a flow for one
    /// temperature is trained over its neighbourhood, T inside).
    pub fn around(t: f64) -> TrainConfig {
        TrainConfig::new(t / 1.25, t * 1.25)
    }

    /// Budget `steps`, or instead a wall-time limit of `seconds` where the user sets one.
    pub fn set_budget(&mut self, steps: usize, seconds: Option<f64>) {
        (self.steps, self.seconds) = match seconds {
            Some(s) => (None, Some(s)),
            None => (Some(steps), None),
        };
    }
}

/// What training did.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// Steps taken.
    pub steps: usize,
    /// Seconds spent training (after data generation).
    pub seconds: f64,
    /// Seconds spent generating the forward-KL data.
    pub data_seconds: f64,
    /// Last reverse-KL loss.
    pub final_loss: f64,
    /// Flow samples per second during training.
    pub samples_per_s: f64,
    /// Restored non-finite steps.
    pub restored_steps: usize,
    /// Samples dropped for non-finite energies.
    pub bad_samples: usize,
    /// Energy evaluations spent: the forward-KL data's plus one per reverse-KL sample.
    pub energy_evaluations: usize,
}

const BINS: usize = 8;

fn log_uniform(rng: &mut impl Rng, a: f64, b: f64) -> f64 {
    (a.ln() + rng.random::<f64>() * (b.ln() - a.ln())).exp()
}

/// Samples for the forward-KL terms: states `x` (one per row) and the temperature each was
/// drawn at, with what produced them.
#[derive(Clone, Debug)]
pub struct TrainingData {
    /// States, one per row.
    pub x: Array2<f64>,
    /// Temperature of each row.
    pub temps: Vec<f64>,
    /// What produced them (shown to observers).
    pub source: String,
    /// Seconds spent producing them.
    pub seconds: f64,
    /// Energy (or gradient) evaluations spent producing them.
    pub evaluations: usize,
}

fn check_setup(flow: &Flow, energy: &dyn Energy, cfg: &TrainConfig) -> Result<()> {
    check_temperature(cfg.t_min)?;
    check_temperature(cfg.t_max)?;
    if cfg.t_min >= cfg.t_max {
        return input_err(format!(
            "t_min {} must be below t_max {}",
            cfg.t_min, cfg.t_max
        ));
    }
    if !matches!(flow.conditioning(), Conditioning::Temperature { .. }) {
        return input_err("the trainer needs a temperature-conditioned flow");
    }
    if flow.dim() != energy.dim() {
        return input_err(format!(
            "flow has dim {}, {} has {}",
            flow.dim(),
            energy.name(),
            energy.dim()
        ));
    }
    if cfg.seconds.is_none() && cfg.steps.is_none() {
        return input_err("give a time or a step budget");
    }
    if cfg.batch == 0 {
        return input_err("batch must be ≥ 1");
    }
    Ok(())
}

/// Parallel-tempering samples across the config's range (10 geometric temperatures,
/// `cfg.pt_sweeps` sweeps), the default forward-KL data.
pub fn tempering_data(energy: &dyn Energy, cfg: &TrainConfig) -> Result<TrainingData> {
    let t_data = Instant::now();
    let mut rng = crate::rng::stream(cfg.seed, "train/tempering-starts", 0);
    let mut pt = PtConfig::geometric(cfg.t_min, cfg.t_max, 10);
    pt.n_sweeps = cfg.pt_sweeps;
    pt.burn_in = cfg.pt_sweeps / 4;
    pt.thin = 5;
    pt.n_ladders = 8;
    pt.seed = crate::rng::derive(cfg.seed, "train/tempering", 0);
    pt.starts = crate::mcmc::dispersed_starts(energy, pt.n_ladders, &mut rng)?;
    pt.moves = crate::mcmc::Moves::for_system(energy);
    let run = parallel_tempering(energy, &pt)?;
    let n: usize = run.samples.iter().map(|s| s.nrows()).sum();
    let mut x = Array2::zeros((n, energy.dim()));
    let mut temps = Vec::with_capacity(n);
    let mut row = 0;
    for (s, &t) in run.samples.iter().zip(&run.temps) {
        for r in s.rows() {
            x.row_mut(row).assign(&r);
            temps.push(t);
            row += 1;
        }
    }
    Ok(TrainingData {
        x,
        temps,
        source: "parallel-tempering".into(),
        seconds: t_data.elapsed().as_secs_f64(),
        evaluations: run.energy_evaluations,
    })
}

/// HMC samples across the config's range: `n_temps` geometric temperatures, 8 chains each,
/// `per_chain` trajectories per chain after burn-in (for smooth high-dimensional systems such
/// as lattice fields, where HMC decorrelates in a few trajectories and tempering is not needed).
pub fn hmc_data(
    energy: &dyn Energy,
    cfg: &TrainConfig,
    n_temps: usize,
    per_chain: usize,
) -> Result<TrainingData> {
    if n_temps < 2 || per_chain == 0 {
        return input_err("HMC data needs ≥ 2 temperatures and ≥ 1 trajectory per chain");
    }
    let t_data = Instant::now();
    let ratio = cfg.t_max / cfg.t_min;
    let (mut rows, mut temps, mut evaluations) = (Vec::new(), Vec::new(), 0);
    for k in 0..n_temps {
        let t = cfg.t_min * ratio.powf(k as f64 / (n_temps - 1) as f64);
        let hc = HmcConfig {
            n_trajectories: per_chain,
            burn_in: 200,
            n_chains: 8,
            seed: crate::rng::derive(cfg.seed, "train/hmc", k as u64),
            ..Default::default()
        };
        // The starts on a stream of their own: seeded(hc.seed) is the chains' momenta.
        let mut starts_rng = crate::rng::stream(cfg.seed, "train/hmc-starts", k as u64);
        let starts = crate::mcmc::chain_starts(energy, 8, &mut starts_rng)?;
        let (x, evals) = hmc_samples(energy, t, &starts, &hc)?;
        evaluations += evals;
        temps.extend(std::iter::repeat_n(t, x.nrows()));
        rows.push(x);
    }
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let x = ndarray::concatenate(ndarray::Axis(0), &views)
        .map_err(|e| Error::Input(format!("HMC data: {e}")))?;
    Ok(TrainingData {
        x,
        temps,
        source: "HMC".into(),
        seconds: t_data.elapsed().as_secs_f64(),
        evaluations,
    })
}

/// The recipe every command shares: a new coupling flow (`flow`, seeded with `tc.seed`; on the
/// system's coordinates where it has them, [`crate::flows::system_coupling_flow`]) conditioned
/// on temperature over [`tc.t_min`, `tc.t_max`], trained on `energy` with [`train`].
pub fn train_new(
    energy: &dyn Energy,
    flow: &CouplingConfig,
    tc: &TrainConfig,
    observers: &mut [&mut dyn Observer],
) -> Result<(Flow, TrainReport)> {
    let mut fc = flow.clone();
    fc.seed = tc.seed;
    let cond = Conditioning::Temperature {
        t_min: tc.t_min,
        t_max: tc.t_max,
    };
    let mut flow = crate::flows::system_coupling_flow(energy, cond, &fc)?;
    let report = train(&mut flow, energy, tc, observers)?;
    Ok((flow, report))
}

/// Train `flow` (conditioned on temperature over the config's range) on `energy`, with
/// parallel-tempering data for the forward-KL terms (when `cfg.pt_sweeps` > 0).
pub fn train(
    flow: &mut Flow,
    energy: &dyn Energy,
    cfg: &TrainConfig,
    observers: &mut [&mut dyn Observer],
) -> Result<TrainReport> {
    check_setup(flow, energy, cfg)?;
    let data = if cfg.pt_sweeps > 0 && (cfg.forward_weight > 0.0 || cfg.warm_fraction > 0.0) {
        // Ctrl-C during the data: training stops at its first step, without them.
        crate::error::unless_interrupted(tempering_data(energy, cfg))?
    } else {
        None
    };
    train_with_data(flow, energy, cfg, data, observers)
}

/// Train as [`train`] with the given forward-KL data (`None`: pure reverse KL).
pub fn train_with_data(
    flow: &mut Flow,
    energy: &dyn Energy,
    cfg: &TrainConfig,
    data: Option<TrainingData>,
    observers: &mut [&mut dyn Observer],
) -> Result<TrainReport> {
    check_setup(flow, energy, cfg)?;
    if let Some(td) = &data {
        crate::systems::check_batch(energy.dim(), &td.x.view())?;
        if td.temps.len() != td.x.nrows() || td.temps.is_empty() {
            return input_err(format!(
                "{} data rows with {} temperatures",
                td.x.nrows(),
                td.temps.len()
            ));
        }
        if let Some(t) = td.temps.iter().find(|t| !(**t > 0.0 && t.is_finite())) {
            return input_err(format!("data temperature {t} is not positive"));
        }
        if td.x.iter().any(|v| !v.is_finite()) {
            return input_err("training data holds a non-finite coordinate");
        }
    }
    // d: the state's dimension; fd: the layers' (they differ with system coordinates).
    let (d, fd) = (flow.dim(), flow.flow_dim());
    let coords = flow.coordinates().cloned();
    let b = cfg.batch;
    let mut rng = crate::rng::seeded(cfg.seed);
    let data_seconds = data.as_ref().map_or(0.0, |td| td.seconds);
    let mut evaluations = data.as_ref().map_or(0, |td| td.evaluations);
    let data_note = data.as_ref().map(|td| {
        format!(
            "{} {} samples in {:.1}s",
            td.temps.len(),
            td.source,
            td.seconds
        )
    });
    // In the flow's coordinates (the states themselves unless it has system coordinates).
    let data: Option<(Array2<f64>, Vec<f64>)> = match data {
        Some(td) => Some((
            flow.to_flow_coordinates(td.x.view(), &td.temps)?.0,
            td.temps,
        )),
        None => None,
    };

    let with_data = data.is_some();
    // The forward-KL term after the warm start (skipped entirely when its weight is 0).
    let data_term = with_data && cfg.forward_weight > 0.0;
    let mut prog = combined_program(flow, data_term, cfg.forward_weight)?;
    let mut warm_prog = if with_data && cfg.warm_fraction > 0.0 {
        Some(crate::train::max_likelihood_program(flow)?)
    } else {
        None
    };
    flow.write_params(&mut prog)?;
    let mut opt = Adam::new(cfg.lr).with_clip(cfg.clip);
    let mut snapshot = prog.snapshot()?;
    let mut opt_snapshot = opt.clone();
    // Halved on every non-finite step; multiplies the schedule for the rest of training.
    let mut lr_scale = 1.0;

    let (mut z, mut tz, mut gu, mut w) = (
        vec![0f32; b * fd],
        vec![0f32; b],
        vec![0f32; b * fd],
        vec![0f32; b],
    );
    let (mut xd, mut td) = (vec![0f32; b * fd], vec![0f32; b]);
    let mut grad = vec![0.0; d];
    let mut xrow = vec![0.0; d];
    let start = Instant::now();
    let (mut step, mut restored, mut bad_total, mut last_loss) = (0usize, 0usize, 0usize, f64::NAN);
    let mut warm_done = warm_prog.is_none();
    let mut event: Option<String> = data_note.map(|n| {
        if warm_prog.is_some() {
            format!("{n}; forward-KL warm start")
        } else {
            n
        }
    });
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        let frac_t = cfg.seconds.map(|s| elapsed / s).unwrap_or(0.0);
        let frac_s = cfg.steps.map(|s| step as f64 / s as f64).unwrap_or(0.0);
        let progress = frac_t.max(frac_s);
        if progress >= 1.0 || crate::observe::interrupted() {
            break;
        }
        let lr = lr_scale
            * cfg.lr
            * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        opt.set_lr(lr);
        step += 1;
        // Data rows are read by the warm start and by the forward-KL term only.
        let reads_data = !warm_done || data_term;
        if let (Some((x, ts)), true) = (&data, reads_data) {
            for i in 0..b {
                let k = rng.random_range(0..ts.len());
                for j in 0..fd {
                    xd[i * fd + j] = x[[k, j]] as f32;
                }
                td[i] = ts[k] as f32;
            }
        }
        // Warm start: forward KL alone.
        if !warm_done {
            if progress < cfg.warm_fraction {
                let wp = warm_prog.as_mut().unwrap();
                let r = wp.step(&[("x", &xd), ("cond", &td)], &mut opt);
                let loss = match r {
                    Ok((l, _)) => l,
                    Err(e) => {
                        restored += 1;
                        event = Some(format!("non-finite forward-KL step ({e}); lr halved"));
                        lr_scale *= 0.5;
                        f64::NAN
                    }
                };
                let m = StepMetrics {
                    step,
                    seconds: start.elapsed().as_secs_f64(),
                    progress,
                    loss,
                    warm_start: true,
                    lr,
                    ess_by_bin: Vec::new(),
                    samples_per_s: 0.0,
                    bad_samples: 0,
                    event: event.take(),
                    acceptance: None,
                };
                for o in observers.iter_mut() {
                    o.observe(&m);
                }
                continue;
            }
            // Hand the warm parameters to the combined program.
            let mut wp = warm_prog.take().unwrap();
            snapshot = wp.snapshot()?;
            prog.restore(&snapshot)?;
            opt_snapshot = opt.clone();
            warm_done = true;
            event = Some("warm start done; reverse KL + forward KL".into());
        }
        // Reverse KL: sample x = f(z; T), evaluate U and ∇U on the host.
        flow.draw_base(&mut z, &mut rng);
        // Temperatures in groups of GROUP samples sharing one T (log-uniform), so that the
        // mass-covering term can normalise its weights within a temperature.
        let mut temps: Vec<f64> = Vec::with_capacity(b);
        while temps.len() < b {
            let t = log_uniform(&mut rng, cfg.t_min, cfg.t_max);
            let k = GROUP.min(b - temps.len());
            temps.extend(std::iter::repeat_n(t, k));
        }
        for (t, &v) in tz.iter_mut().zip(&temps) {
            *t = v as f32;
        }
        // First half of the step: the flow forward (x, log q); ∇U and the weights are late
        // inputs supplied once the host has evaluated the energy at x.
        let n_in = if data_term { 6 } else { 4 };
        let fwd = {
            let inputs: [(&str, &[f32]); 6] = [
                ("z", &z),
                ("cond", &tz),
                ("grad_u", &gu),
                ("w", &w),
                ("x_data", &xd),
                ("cond_data", &td),
            ];
            prog.step_begin(&inputs[..n_in], &["grad_u", "w"])?
        };
        let (xs, lq) = (fwd.get("x")?, fwd.get("log_q")?);
        let mut u = vec![f64::NAN; b];
        let mut good = 0usize;
        for i in 0..b {
            let y = &xs[i * fd..(i + 1) * fd];
            let gi = &mut gu[i * fd..(i + 1) * fd];
            gi.iter_mut().for_each(|g| *g = 0.0);
            if !y.iter().all(|v| v.is_finite()) || !lq[i].is_finite() {
                continue;
            }
            // With system coordinates the sample is y: map it to the state, and take the
            // energy as U + T · log_factor (so that U/T + log q(y) = U/T + log q(x)) with its
            // gradient pulled back to y.
            let mapped = coords.as_ref().map(|co| {
                let yv: Vec<f64> = y.iter().map(|&v| v as f64).collect();
                co.to_state(&yv, temps[i], &mut rng)
            });
            match &mapped {
                Some(m) => xrow.copy_from_slice(&m.x),
                None => xrow.iter_mut().zip(y).for_each(|(a, &v)| *a = v as f64),
            }
            let mut ui = energy.energy_grad(&xrow, &mut grad);
            if !(ui.is_finite() && grad.iter().all(|g| g.is_finite())) {
                continue;
            }
            match (&coords, &mapped) {
                (Some(co), Some(m)) => {
                    ui += temps[i] * m.log_factor;
                    let gy = co.energy_gradient(m, &grad, temps[i]);
                    gi.iter_mut().zip(gy).for_each(|(a, v)| *a = v as f32);
                }
                _ => gi.iter_mut().zip(&grad).for_each(|(a, &v)| *a = v as f32),
            }
            if ui.is_finite() {
                u[i] = ui;
                good += 1;
            } else {
                gi.iter_mut().for_each(|g| *g = 0.0);
            }
        }
        soften_outliers(&temps, &mut u, &mut gu, fd);
        bad_total += b - good;
        evaluations += b;
        if good == 0 {
            return Err(Error::Input(format!(
                "every sample of step {step} has a non-finite energy"
            )));
        }
        mix_weights(&temps, &u, lq, cfg.mass_covering, good, &mut w);
        let loss_host: f64 = (0..b)
            .filter(|&i| u[i].is_finite())
            .map(|i| lq[i] as f64 + u[i] / temps[i])
            .sum::<f64>()
            / good as f64;
        match prog.step_finish(&[("grad_u", &gu), ("w", &w)], &mut opt) {
            Ok(_) if loss_host.is_finite() => {
                last_loss = loss_host;
                if step % 25 == 0 {
                    snapshot = prog.snapshot()?;
                    opt_snapshot = opt.clone();
                }
            }
            other => {
                restored += 1;
                if restored > 20 {
                    return Err(Error::Engine(
                        "training diverged: more than 20 non-finite steps".into(),
                    ));
                }
                prog.restore(&snapshot)?;
                opt = opt_snapshot.clone();
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => format!("non-finite loss {loss_host}"),
                };
                lr_scale *= 0.5;
                event = Some(format!(
                    "step discarded ({why}); parameters restored, learning rate halved"
                ));
            }
        }
        let ess = ess_by_bin(&temps, &u, lq, cfg.t_min, cfg.t_max);
        let secs = start.elapsed().as_secs_f64();
        let m = StepMetrics {
            step,
            seconds: secs,
            progress,
            loss: last_loss,
            warm_start: false,
            lr,
            ess_by_bin: ess,
            samples_per_s: (step as f64 * b as f64) / secs.max(1e-9),
            bad_samples: bad_total,
            event: event.take(),
            acceptance: None,
        };
        for o in observers.iter_mut() {
            o.observe(&m);
        }
    }
    flow.read_params(&mut prog)?;
    let secs = start.elapsed().as_secs_f64();
    let done = StepMetrics {
        step,
        seconds: secs,
        progress: 1.0,
        loss: last_loss,
        warm_start: false,
        lr: opt.lr(),
        ess_by_bin: Vec::new(),
        samples_per_s: (step * b) as f64 / secs.max(1e-9),
        bad_samples: bad_total,
        event: None,
        acceptance: None,
    };
    for o in observers.iter_mut() {
        o.observe(&done);
    }
    Ok(TrainReport {
        steps: step,
        seconds: secs,
        data_seconds,
        final_loss: last_loss,
        samples_per_s: (step * b) as f64 / secs.max(1e-9),
        restored_steps: restored,
        bad_samples: bad_total,
        energy_evaluations: evaluations,
    })
}

/// Energies more than `OUTLIER_KT` + d thermal units above their temperature group's median
/// enter the reverse-KL loss logarithmically (Noé et al. 2019): one overlapping pair of atoms at
/// 10¹⁰ kT would otherwise own the clipped gradient of the whole batch. Only training sees
/// this; every estimate uses the true energy.
const OUTLIER_KT: f64 = 20.0;

/// βU above the cap c = median(βU) + `OUTLIER_KT` + d becomes c + ln(1 + βU − c), its
/// gradient scaled by 1/(1 + βU − c); per temperature group, non-finite energies untouched.
fn soften_outliers(temps: &[f64], u: &mut [f64], gu: &mut [f32], d: usize) {
    for g in (0..u.len()).step_by(GROUP) {
        let end = (g + GROUP).min(u.len());
        let mut bu: Vec<f64> = (g..end)
            .filter(|&i| u[i].is_finite())
            .map(|i| u[i] / temps[i])
            .collect();
        if bu.is_empty() {
            continue;
        }
        bu.sort_by(f64::total_cmp);
        let cap = bu[bu.len() / 2] + OUTLIER_KT + d as f64;
        for i in g..end {
            let b = u[i] / temps[i];
            if b.is_finite() && b > cap {
                u[i] = temps[i] * (cap + (b - cap).ln_1p());
                let scale = (1.0 / (1.0 + b - cap)) as f32;
                gu[i * d..(i + 1) * d].iter_mut().for_each(|v| *v *= scale);
            }
        }
    }
}

/// Samples per temperature group in a reverse-KL batch.
const GROUP: usize = 32;

/// Per-sample loss weights: (1 − α)/good (reverse KL) plus α · ŵ²/(groups) with ŵ² = w²/Σw²
/// normalised within each temperature group (the α = 2 divergence log E_q[(p/q)²], whose
/// gradient E_q[2w² ∇ℓ]/E_q[w²] weights the reverse-KL path gradient by w²). Samples with a
/// non-finite energy get 0.
fn mix_weights(temps: &[f64], u: &[f64], lq: &[f32], alpha: f64, good: usize, w: &mut [f32]) {
    let b = temps.len();
    let groups = b.div_ceil(GROUP) as f64;
    for i in 0..b {
        w[i] = if u[i].is_finite() {
            ((1.0 - alpha) / good as f64) as f32
        } else {
            0.0
        };
    }
    if alpha == 0.0 {
        return;
    }
    for g in (0..b).step_by(GROUP) {
        let end = (g + GROUP).min(b);
        let l2: Vec<f64> = (g..end)
            .map(|i| {
                if u[i].is_finite() && lq[i].is_finite() {
                    2.0 * (-u[i] / temps[i] - lq[i] as f64)
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        let mx = l2.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if mx == f64::NEG_INFINITY {
            continue;
        }
        let tot: f64 = l2.iter().map(|l| (l - mx).exp()).sum();
        for (k, l) in l2.iter().enumerate() {
            w[g + k] += (alpha * (l - mx).exp() / tot / groups) as f32;
        }
    }
}

/// ESS fraction of the batch's importance weights within log-spaced temperature bins.
fn ess_by_bin(
    temps: &[f64],
    u: &[f64],
    lq: &[f32],
    t_min: f64,
    t_max: f64,
) -> Vec<(f64, f64, f64)> {
    let (a, bnd) = (t_min.ln(), t_max.ln());
    let mut bins: Vec<Vec<f64>> = vec![Vec::new(); BINS];
    for i in 0..temps.len() {
        let k = (((temps[i].ln() - a) / (bnd - a)) * BINS as f64)
            .floor()
            .clamp(0.0, (BINS - 1) as f64) as usize;
        let lw = if u[i].is_finite() {
            -u[i] / temps[i] - lq[i] as f64
        } else {
            f64::NAN
        };
        bins[k].push(lw);
    }
    bins.iter()
        .enumerate()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, v)| {
            let lo = (a + (bnd - a) * k as f64 / BINS as f64).exp();
            let hi = (a + (bnd - a) * (k + 1) as f64 / BINS as f64).exp();
            let e = crate::estimators::Weights::from_log(v)
                .map(|w| w.ess_fraction())
                .unwrap_or(0.0);
            (lo, hi, e)
        })
        .collect()
}
