//! The temperature sweep: train (or load) one temperature-conditioned flow over
//! [T_min, T_max], then at each of N evenly spaced temperatures draw samples in rounds until
//! C_V reaches the requested relative standard error (or the budget ends), reweight, and
//! report ⟨U⟩, C_V (fluctuation and d⟨U⟩/dT), log Z, F, S with standard errors, the trust
//! checks and a verdict, beside exact references where they exist.
//!
//! **Proposal.** Samples come from the defensive mixture 0.9 q(·|T) + 0.1 q_{1.2}(·|T) (the
//! flow with its base widened 1.2×; exact density at no extra cost), so that tails where the
//! flow is lighter than the Boltzmann distribution do not give unbounded weights.
//!
//! **Rounds.** Every temperature starts with `samples` draws. After each round a temperature
//! whose relative C_V error r exceeds `cv_tol` draws about N (r/cv_tol)² · 1.2 − N more
//! (at most 3 N, at least N/4), within `max_samples` per temperature and the optional
//! `estimate_seconds`.
//!
//! **Trust** ([`checks`]): a temperature is trusted when its local checks (ESS, PSIS k̂,
//! finite energies), the thermodynamic-consistency checks across the grid, and the
//! comparison with an independent parallel-tempering witness ([`witness`]) all pass.
//!
//! **Repair.** When temperatures fail, the sweep continues training (half the training
//! budget, lower learning rate) with reverse KL on the failing range and forward KL (weight 2)
//! on the witness's configurations across the whole range plus, at each failing temperature,
//! flow samples resampled by importance weight (so that under-covered regions return in
//! proportion to their Boltzmann mass), then re-estimates everything with a fresh witness; up
//! to `repairs` times. What it did is reported.

pub mod chains;
pub mod checks;
mod report;
pub mod witness;

pub use report::{ExactCurves, SweepResult, TrainSummary, WitnessSummary};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{input_err, Error, Result};
use crate::estimators::{cv_from_derivative, thermo, Estimate, Thermo};
use crate::exact::{reference, Reference};
use crate::flows::{builders, io, Conditioning, CouplingConfig, Flow, Transformer};
use crate::systems::{self, check_temperature, Energy};
use crate::train::{
    train, train_with_data, History, Observer, Progress, TrainConfig, TrainReport, TrainingData,
};
use checks::Checks;
use witness::{run_witness, Witness, WitnessConfig};

/// Settings of a sweep (the CLI's flags).
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// System name.
    pub system: String,
    /// `key=value` parameters.
    pub params: Vec<String>,
    /// Lowest temperature.
    pub t_min: f64,
    /// Highest temperature.
    pub t_max: f64,
    /// Number of evenly spaced temperatures.
    pub temps: usize,
    /// Training budget in seconds (training stops at the first budget reached).
    pub train_seconds: Option<f64>,
    /// Training budget in steps (the same result on any machine for a given seed).
    pub train_steps: Option<usize>,
    /// Samples per temperature in the first round.
    pub samples: usize,
    /// Target relative standard error of C_V at every temperature (None: one round).
    pub cv_tol: Option<f64>,
    /// Most samples drawn per temperature.
    pub max_samples: usize,
    /// Optional wall-clock budget for estimation (all rounds).
    pub estimate_seconds: Option<f64>,
    /// Witness sweeps after burn-in (0: no witness; its checks then fail).
    pub witness_sweeps: usize,
    /// Repair rounds for failing temperatures.
    pub repairs: usize,
    /// Seed.
    pub seed: u64,
    /// Flow architecture.
    pub flow: CouplingConfig,
    /// Load a trained model instead of training.
    pub load_model: Option<PathBuf>,
    /// Save the trained model.
    pub save_model: Option<PathBuf>,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Default for SweepConfig {
    /// The default run: double-well-2d over [0.5, 3] at 32 temperatures, C_V to 1 %: about a
    /// minute on two cores.
    fn default() -> Self {
        SweepConfig {
            system: "double-well-2d".into(),
            params: Vec::new(),
            t_min: 0.5,
            t_max: 3.0,
            temps: 32,
            train_seconds: Some(30.0),
            train_steps: None,
            samples: 20_000,
            cv_tol: Some(DEFAULT_CV_TOL),
            max_samples: 1_000_000,
            estimate_seconds: None,
            witness_sweeps: 20_000,
            repairs: 1,
            seed: 0,
            flow: default_flow(),
            load_model: None,
            save_model: None,
            progress: true,
        }
    }
}

/// Base width s of the defensive component of the estimation proposal (see
/// [`Flow::sample_mixture`]): keeps the weights bounded where the flow's tails are lighter
/// than the target's, for a few per mille of ESS.
pub const DEFENSIVE_WIDTH: f64 = 1.2;
/// Its share ε of the samples.
pub const DEFENSIVE_FRACTION: f64 = 0.1;

/// Independent chains of the flow-MCMC repair.
pub const MCMC_CHAINS: usize = 2048;

/// The default target relative standard error of C_V.
pub const DEFAULT_CV_TOL: f64 = 0.01;

/// The sweep's default flow: 6 rational-quadratic spline couplings (K = 8, B = 5), conditioner
/// 2×48 tanh.
pub fn default_flow() -> CouplingConfig {
    CouplingConfig {
        layers: 6,
        hidden: 48,
        depth: 2,
        activation: crate::flows::Activation::Tanh,
        transformer: Transformer::Spline {
            bins: 8,
            bound: 5.0,
        },
        seed: 0,
    }
}

/// Evenly spaced temperatures.
pub fn temperature_grid(t_min: f64, t_max: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| t_min + (t_max - t_min) * i as f64 / (n - 1) as f64)
        .collect()
}

fn params_map(e: &dyn Energy) -> serde_json::Map<String, serde_json::Value> {
    e.params()
        .into_iter()
        .map(|(k, v)| (k, serde_json::json!(v)))
        .collect()
}

fn validate(cfg: &SweepConfig) -> Result<()> {
    check_temperature(cfg.t_min)?;
    check_temperature(cfg.t_max)?;
    if cfg.t_min >= cfg.t_max {
        return input_err(format!(
            "--tmin {} must be below --tmax {}",
            cfg.t_min, cfg.t_max
        ));
    }
    if cfg.temps < 2 {
        return input_err(format!("--temps must be at least 2, got {}", cfg.temps));
    }
    if cfg.samples < 100 {
        return input_err("--samples must be at least 100");
    }
    if cfg.max_samples < cfg.samples {
        return input_err(format!(
            "--max-samples {} is below --samples {}",
            cfg.max_samples, cfg.samples
        ));
    }
    if let Some(t) = cfg.cv_tol {
        if !(t.is_finite() && t > 0.0) {
            return input_err(format!("--cv-tol must be positive, got {t}"));
        }
    }
    if let Some(s) = cfg.estimate_seconds {
        if !(s.is_finite() && s > 0.0) {
            return input_err(format!("--estimate-seconds must be positive, got {s}"));
        }
    }
    if cfg.load_model.is_none() {
        if let Some(s) = cfg.train_seconds {
            if !(s.is_finite() && s > 0.0) {
                return input_err("--train-seconds must be positive");
            }
        }
        if cfg.train_steps == Some(0) {
            return input_err("--train-steps must be positive");
        }
        if cfg.train_seconds.is_none() && cfg.train_steps.is_none() {
            return input_err("give --train-seconds or --train-steps");
        }
    }
    Ok(())
}

/// One temperature's accumulated samples: energies and flow log-densities.
#[derive(Clone, Debug, Default)]
struct Draws {
    u: Vec<f64>,
    log_q: Vec<f64>,
}

impl Draws {
    fn max_log_w(&self, t: f64) -> f64 {
        self.u
            .iter()
            .zip(&self.log_q)
            .map(|(u, q)| -u / t - q)
            .filter(|l| l.is_finite())
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Draw `n` flow samples at `t` and their energies (evaluated in parallel) into `d`.
fn draw(
    flow: &Flow,
    energy: &dyn Energy,
    t: f64,
    n: usize,
    seed: u64,
    d: &mut Draws,
) -> Result<()> {
    let mut rng = crate::rng::seeded(seed);
    let s = flow.sample_mixture(n, &[t], DEFENSIVE_WIDTH, DEFENSIVE_FRACTION, &mut rng)?;
    let dim = energy.dim();
    let x = s.x.as_standard_layout();
    let flat = x
        .as_slice()
        .ok_or_else(|| Error::Engine("samples not contiguous".into()))?;
    let u: Vec<f64> = flat
        .par_chunks(dim)
        .map(|r| {
            if r.iter().all(|v| v.is_finite()) {
                energy.energy(r)
            } else {
                f64::NAN
            }
        })
        .collect();
    d.u.extend(u);
    d.log_q.extend(s.log_q);
    Ok(())
}

/// Estimates at each temperature from `samples` flow samples (one round, no tolerance).
pub fn estimate(
    flow: &Flow,
    energy: &dyn Energy,
    temps: &[f64],
    samples: usize,
    seed: u64,
) -> Result<Vec<Thermo>> {
    temps
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let mut d = Draws::default();
            draw(flow, energy, t, samples, seed ^ (i as u64) << 20, &mut d)?;
            thermo(&d.u, &d.log_q, t)
        })
        .collect()
}

/// The outcome of the estimation rounds.
struct Rounds {
    th: Vec<Thermo>,
    draws: Vec<Draws>,
    reached: Vec<bool>,
    /// Where flow-MCMC replaced the importance-sampled ⟨U⟩ and C_V.
    chains: Vec<Option<chains::ChainEstimate>>,
    seconds: f64,
}

/// Sample in rounds until C_V reaches `cv_tol` everywhere or the budget ends.
fn estimate_rounds(
    flow: &Flow,
    energy: &dyn Energy,
    temps: &[f64],
    cfg: &SweepConfig,
    seed: u64,
) -> Result<Rounds> {
    let t0 = Instant::now();
    let n_t = temps.len();
    let mut draws = vec![Draws::default(); n_t];
    let mut want = vec![cfg.samples; n_t];
    let mut th: Vec<Option<Thermo>> = vec![None; n_t];
    let mut reached = vec![false; n_t];
    for round in 0u64.. {
        for i in 0..n_t {
            if want[i] > 0 {
                let s = seed ^ (round << 40) ^ ((i as u64) << 20);
                draw(flow, energy, temps[i], want[i], s, &mut draws[i])?;
                th[i] = Some(thermo(&draws[i].u, &draws[i].log_q, temps[i])?);
            }
        }
        let Some(tol) = cfg.cv_tol else {
            break;
        };
        let out_of_time = cfg
            .estimate_seconds
            .is_some_and(|s| t0.elapsed().as_secs_f64() >= s);
        for i in 0..n_t {
            let t = th[i].as_ref().expect("estimated above");
            let n = draws[i].u.len();
            let rel = t.cv.se / t.cv.value.abs();
            reached[i] = rel <= tol;
            want[i] = if reached[i] || out_of_time || n >= cfg.max_samples {
                0
            } else {
                let need = if rel.is_finite() {
                    (n as f64 * (rel / tol).powi(2) * 1.2).ceil() as usize
                } else {
                    4 * n
                };
                need.saturating_sub(n)
                    .clamp(n / 4, 3 * n)
                    .min(cfg.max_samples - n)
            };
        }
        let pending = want.iter().filter(|&&w| w > 0).count();
        if cfg.progress {
            let done = reached.iter().filter(|&&r| r).count();
            let (lo, hi) = draws.iter().fold((usize::MAX, 0), |(a, b), d| {
                (a.min(d.u.len()), b.max(d.u.len()))
            });
            eprintln!(
                "[sweep] round {}: C_V within {:.2} % at {done}/{n_t} temperatures, samples {lo}–{hi}, {:.1} s{}",
                round + 1,
                100.0 * tol,
                t0.elapsed().as_secs_f64(),
                if pending > 0 {
                    format!("; drawing more at {pending}")
                } else {
                    String::new()
                }
            );
        }
        if pending == 0 {
            break;
        }
    }
    Ok(Rounds {
        th: th.into_iter().map(|t| t.expect("estimated")).collect(),
        draws,
        reached,
        chains: vec![None; n_t],
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Every check at every temperature.
fn all_checks(
    rounds: &Rounds,
    w: Option<&Witness>,
    flow: &Flow,
    energy: &dyn Energy,
) -> Result<(Vec<Checks>, Vec<checks::WitnessPoint>)> {
    let th = &rounds.th;
    let grid = checks::grid(th);
    let mut all: Vec<Checks> = th
        .iter()
        .zip(grid)
        .zip(&rounds.chains)
        .map(|((t, g), ch)| {
            let mut c = match ch {
                None => checks::local(t),
                Some(ch) => checks::local_chains(t, ch),
            };
            c.extend(g);
            c
        })
        .collect();
    let points = match w {
        Some(w) => {
            let missed = (0..w.rungs.len())
                .map(|k| match w.grid_index[k] {
                    Some(i) => w.missed_mass(k, flow, energy, rounds.draws[i].max_log_w(th[i].t)),
                    None => Ok(f64::NAN),
                })
                .collect::<Result<Vec<f64>>>()?;
            let (wc, points) = checks::witness(th, w, &missed);
            for (c, x) in all.iter_mut().zip(wc) {
                c.extend(x);
            }
            points
        }
        None => {
            for c in all.iter_mut() {
                c.insert(
                    "witness".into(),
                    checks::Check {
                        pass: false,
                        value: 0.0,
                        limit: 1.0,
                    },
                );
            }
            Vec::new()
        }
    };
    Ok((all, points))
}

fn train_flow(
    energy: &dyn Energy,
    cfg: &SweepConfig,
    history: &mut History,
) -> Result<(Flow, TrainSummary)> {
    let mut fc = cfg.flow.clone();
    fc.seed = cfg.seed;
    let mut flow = builders::coupling_flow(
        energy.dim(),
        Conditioning::Temperature {
            t_min: cfg.t_min,
            t_max: cfg.t_max,
        },
        &fc,
    )?;
    let mut tc = sweep_training(cfg.t_min, cfg.t_max);
    tc.seconds = cfg.train_seconds;
    tc.steps = cfg.train_steps;
    tc.seed = cfg.seed;
    let report = train_observed(&mut flow, energy, &tc, None, cfg.progress, history)?;
    Ok((flow, summary(&report, false)))
}

/// The sweep's training recipe: mass-covering where reverse KL alone is mode-seeking, for
/// weights whose tails pass the k̂ check — forward KL at weight 1 on 20 000 tempering sweeps of
/// data, and half of the energy-based loss the α = 2 divergence.
pub fn sweep_training(t_min: f64, t_max: f64) -> TrainConfig {
    let mut tc = TrainConfig::new(t_min, t_max);
    tc.forward_weight = 1.0;
    tc.pt_sweeps = 20_000;
    tc.mass_covering = 0.5;
    tc
}

fn summary(r: &TrainReport, loaded: bool) -> TrainSummary {
    TrainSummary {
        steps: r.steps,
        seconds: r.seconds + r.data_seconds,
        final_loss: r.final_loss,
        samples_per_s: r.samples_per_s,
        loaded,
    }
}

/// Train with the history observer, and the progress bar when asked; `data` None: parallel
/// tempering data as in [`train`].
fn train_observed(
    flow: &mut Flow,
    energy: &dyn Energy,
    tc: &TrainConfig,
    data: Option<TrainingData>,
    progress: bool,
    history: &mut History,
) -> Result<TrainReport> {
    let mut bar = Progress::new(1.0);
    let mut obs: Vec<&mut dyn Observer> = vec![history];
    if progress {
        obs.push(&mut bar);
    }
    match data {
        None => train(flow, energy, tc, &mut obs),
        Some(d) => train_with_data(flow, energy, tc, Some(d), &mut obs),
    }
}

fn load_flow(
    path: &std::path::Path,
    cfg: &SweepConfig,
    energy: &dyn Energy,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<Flow> {
    let (flow, meta) = io::load(path)?;
    let sys = meta.get("system").and_then(|v| v.as_str()).unwrap_or("?");
    let same_params = meta.get("params").and_then(|v| v.as_object()) == Some(params);
    if sys != cfg.system || !same_params || flow.dim() != energy.dim() {
        return Err(Error::Input(format!(
            "model {} was trained for {sys} {}, not {} {}",
            path.display(),
            meta.get("params")
                .map(|p| p.to_string())
                .unwrap_or_default(),
            cfg.system,
            serde_json::Value::Object(params.clone())
        )));
    }
    match flow.conditioning() {
        Conditioning::Temperature { t_min, t_max } => {
            if cfg.t_min < t_min * 0.999 || cfg.t_max > t_max * 1.001 {
                eprintln!(
                    "warning: sweeping [{}, {}] with a model trained on [{t_min}, {t_max}]: outside it the flow extrapolates",
                    cfg.t_min, cfg.t_max
                );
            }
        }
        _ => {
            return input_err(format!(
                "model {} is not conditioned on temperature",
                path.display()
            ))
        }
    }
    Ok(flow)
}

/// Sampling–importance–resampling at each of `temps`: 50 000 flow samples, 10 000 of them
/// drawn again with probability ∝ weight, so that regions the flow under-covers come back
/// in proportion to their Boltzmann mass: forward-KL data ≈ p(·|T) where the flow is weak.
fn resampled(flow: &Flow, energy: &dyn Energy, temps: &[f64], seed: u64) -> Result<TrainingData> {
    use rand::Rng;
    let t0 = Instant::now();
    let (n_draw, n_keep) = (50_000, 10_000);
    let d = energy.dim();
    let mut rows = Vec::with_capacity(temps.len() * n_keep * d);
    let mut out_t = Vec::with_capacity(temps.len() * n_keep);
    let mut rng = crate::rng::seeded(seed);
    for &t in temps {
        let s = flow.sample_mixture(n_draw, &[t], DEFENSIVE_WIDTH, DEFENSIVE_FRACTION, &mut rng)?;
        let u = energy.energies(s.x.view())?.to_vec();
        let w = crate::estimators::Weights::boltzmann(&u, &s.log_q, t)?;
        let cum: Vec<f64> = w
            .raw()
            .iter()
            .scan(0.0, |acc, v| {
                *acc += v;
                Some(*acc)
            })
            .collect();
        let total = cum[cum.len() - 1];
        for _ in 0..n_keep {
            let r = rng.random::<f64>() * total;
            let i = cum.partition_point(|c| *c < r).min(n_draw - 1);
            rows.extend(s.x.row(i).iter());
            out_t.push(t);
        }
    }
    let x = ndarray::Array2::from_shape_vec((out_t.len(), d), rows)
        .map_err(|e| Error::Engine(e.to_string()))?;
    Ok(TrainingData {
        x,
        temps: out_t,
        source: "importance-resampled flow samples".into(),
        seconds: t0.elapsed().as_secs_f64(),
        evaluations: temps.len() * n_draw,
    })
}

/// The temperature range to retrain on: the failing temperatures with one grid step either
/// side.
fn failing_range(temps: &[f64], trusted: &[bool]) -> Option<(f64, f64)> {
    let bad: Vec<usize> = (0..temps.len()).filter(|&i| !trusted[i]).collect();
    let (&first, &last) = (bad.first()?, bad.last()?);
    let lo = temps[first.saturating_sub(1)];
    let hi = temps[(last + 1).min(temps.len() - 1)];
    Some((lo, hi))
}

/// Run a sweep. Returns the result and the flow (for plots and saving).
pub fn run(cfg: &SweepConfig) -> Result<(SweepResult, Flow, Arc<dyn Energy>)> {
    validate(cfg)?;
    let energy = systems::build(&cfg.system, &cfg.params)?;
    let params = params_map(energy.as_ref());
    let mut history = History::default();
    let (mut flow, mut train_summary) = match &cfg.load_model {
        Some(path) => (
            load_flow(path, cfg, energy.as_ref(), &params)?,
            TrainSummary {
                final_loss: f64::NAN,
                loaded: true,
                ..Default::default()
            },
        ),
        None => train_flow(energy.as_ref(), cfg, &mut history)?,
    };
    let temps = temperature_grid(cfg.t_min, cfg.t_max, cfg.temps);
    let witness_run = |repair: u64| -> Result<Option<Witness>> {
        if cfg.witness_sweeps == 0 {
            return Ok(None);
        }
        if cfg.progress {
            eprintln!(
                "[sweep] witness: parallel tempering, 16 ladders from dispersed starts, {} sweeps",
                cfg.witness_sweeps
            );
        }
        let wc = WitnessConfig {
            sweeps: cfg.witness_sweeps,
            ladders: 16,
            seed: cfg.seed.wrapping_add(0x5111 + repair),
        };
        run_witness(energy.as_ref(), &temps, &wc).map(Some)
    };
    let mut witness = witness_run(0)?;
    if cfg.progress {
        eprintln!(
            "[sweep] estimating at {} temperatures, {} samples each to start{}",
            temps.len(),
            cfg.samples,
            cfg.cv_tol
                .map(|t| format!(", until C_V is within {:.2} %", 100.0 * t))
                .unwrap_or_default()
        );
    }
    let seed = cfg.seed.wrapping_add(1);
    let mut rounds = estimate_rounds(&flow, energy.as_ref(), &temps, cfg, seed)?;
    let (mut all, mut points) = all_checks(&rounds, witness.as_ref(), &flow, energy.as_ref())?;
    let mut repairs = Vec::new();
    let mut estimate_seconds = rounds.seconds;
    for r in 0..cfg.repairs {
        let trusted: Vec<bool> = all.iter().map(checks::all_pass).collect();
        let Some((lo, hi)) = failing_range(&temps, &trusted) else {
            break;
        };
        let Some(mut data) = witness.as_ref().map(Witness::training_data) else {
            break;
        };
        let failing: Vec<f64> = (0..temps.len())
            .filter(|&i| !trusted[i])
            .map(|i| temps[i])
            .collect();
        let sir = resampled(&flow, energy.as_ref(), &failing, seed ^ 0x51e)?;
        let n_sir = sir.temps.len();
        data.x = ndarray::concatenate(ndarray::Axis(0), &[data.x.view(), sir.x.view()])
            .map_err(|e| Error::Engine(e.to_string()))?;
        data.temps.extend(sir.temps);
        let n_data = data.temps.len();
        let before = trusted.iter().filter(|&&t| t).count();
        let mut tc = sweep_training(lo, hi);
        tc.seconds = cfg.train_seconds.map(|s| s / 2.0);
        tc.steps = cfg.train_steps.map(|s| (s / 2).max(1));
        if tc.seconds.is_none() && tc.steps.is_none() {
            tc.seconds = Some(15.0);
        }
        tc.warm_fraction = 0.0;
        tc.forward_weight = 2.0;
        // Continued training: start where the first schedule's learning rate had come down to.
        tc.lr = 5e-4;
        tc.seed = cfg.seed.wrapping_add(100 + r as u64);
        if cfg.progress {
            eprintln!(
                "[sweep] repair {}: {} of {} temperatures fail; training on T ∈ [{lo:.3}, {hi:.3}] with the witness's configurations",
                r + 1,
                temps.len() - before,
                temps.len()
            );
        }
        let rep = train_observed(
            &mut flow,
            energy.as_ref(),
            &tc,
            Some(data),
            cfg.progress,
            &mut history,
        )?;
        train_summary.steps += rep.steps;
        train_summary.seconds += rep.seconds;
        train_summary.final_loss = rep.final_loss;
        // A fresh witness: the flow has now seen the old one's configurations.
        witness = witness_run(1 + r as u64)?;
        rounds = estimate_rounds(
            &flow,
            energy.as_ref(),
            &temps,
            cfg,
            seed.wrapping_add(1000 * (r as u64 + 1)),
        )?;
        estimate_seconds += rounds.seconds;
        (all, points) = all_checks(&rounds, witness.as_ref(), &flow, energy.as_ref())?;
        let after = all.iter().filter(|c| checks::all_pass(c)).count();
        repairs.push(format!(
            "continued training {} steps ({:.1} s) on T ∈ [{lo:.3}, {hi:.3}] with forward KL on {} configurations (witness, and {n_sir} resampled by weight at the failing temperatures), fresh witness, re-estimated: trusted {before} → {after} of {}",
            rep.steps,
            rep.seconds,
            n_data,
            temps.len()
        ));
    }
    // Where only the weights' tail checks fail, flow-MCMC replaces importance sampling.
    let tail_only: Vec<usize> = (0..temps.len())
        .filter(|&i| {
            let failing: Vec<&String> = all[i]
                .iter()
                .filter(|(_, c)| !c.pass)
                .map(|(n, _)| n)
                .collect();
            !failing.is_empty()
                && failing
                    .iter()
                    .all(|n| *n == "pareto_k" || *n == "pareto_k_cv")
        })
        .collect();
    if !tail_only.is_empty() && cfg.repairs > 0 {
        let t0 = Instant::now();
        for &i in &tail_only {
            let t = temps[i];
            let most = (cfg.max_samples / MCMC_CHAINS).max(50);
            let mut steps = (rounds.draws[i].u.len() / MCMC_CHAINS).clamp(50, most);
            // As many proposals as importance sampling drew, then more (a fresh, longer run)
            // while C_V misses the tolerance, within --max-samples.
            let ce = loop {
                if cfg.progress {
                    eprintln!(
                        "[sweep] flow-MCMC at T = {t:.3}: {MCMC_CHAINS} chains × {steps} steps (heavy-tailed weights)"
                    );
                }
                let ce = chains::flow_mcmc_at(
                    &flow,
                    energy.as_ref(),
                    t,
                    MCMC_CHAINS,
                    steps,
                    20,
                    seed ^ 0xf10 ^ ((i as u64) << 32) ^ steps as u64,
                )?;
                let rel = ce.thermo.cv.se / ce.thermo.cv.value.abs();
                match cfg.cv_tol {
                    Some(tol) if rel > tol && steps < most && rel.is_finite() => {
                        steps = ((steps as f64 * (rel / tol).powi(2) * 1.2).ceil() as usize)
                            .clamp(steps + 1, most);
                    }
                    _ => break ce,
                }
            };
            let is = rounds.th[i];
            let mut th = ce.thermo;
            th.log_z = is.log_z;
            th.f = is.f;
            th.s = Estimate {
                value: th.u.value / t + is.log_z.value,
                se: ((th.u.se / t).powi(2) + is.log_z.se.powi(2)).sqrt(),
            };
            th.cov[3][3] = is.cov[3][3];
            th.n_bad = is.n_bad;
            th.ess_fraction = is.ess_fraction;
            th.pareto_k = is.pareto_k;
            th.pareto_k_cv = is.pareto_k_cv;
            rounds.reached[i] = cfg
                .cv_tol
                .is_none_or(|tol| th.cv.se <= tol * th.cv.value.abs());
            rounds.th[i] = th;
            rounds.chains[i] = Some(ce);
        }
        let before = all.iter().filter(|c| checks::all_pass(c)).count();
        (all, points) = all_checks(&rounds, witness.as_ref(), &flow, energy.as_ref())?;
        let after = all.iter().filter(|c| checks::all_pass(c)).count();
        let secs = t0.elapsed().as_secs_f64();
        estimate_seconds += secs;
        repairs.push(format!(
            "flow-MCMC (independence Metropolis with the flow, {MCMC_CHAINS} chains) replaced importance sampling where only the weights' tail (k̂) failed, at T = {}: trusted {before} → {after} of {} ({secs:.1} s)",
            tail_only
                .iter()
                .map(|&i| format!("{:.3}", temps[i]))
                .collect::<Vec<_>>()
                .join(", "),
            temps.len()
        ));
    }
    if let Some(path) = &cfg.save_model {
        let meta = serde_json::json!({
            "system": cfg.system,
            "params": params,
            "t_min": cfg.t_min,
            "t_max": cfg.t_max,
            "thermoflow_version": env!("CARGO_PKG_VERSION"),
        });
        io::save(&flow, meta, path)?;
    }
    let th = rounds.th;
    let us: Vec<Estimate> = th.iter().map(|t| t.u).collect();
    let deriv = cv_from_derivative(&temps, &us)?;
    let exact: Option<Vec<Reference>> = reference(energy.as_ref(), &temps)?;
    let col = |f: &dyn Fn(&Thermo) -> f64| th.iter().map(f).collect::<Vec<f64>>();
    let trusted: Vec<bool> = all.iter().map(checks::all_pass).collect();
    let samples_used: Vec<usize> = rounds
        .draws
        .iter()
        .zip(&rounds.chains)
        .map(|(d, c)| d.u.len() + c.as_ref().map_or(0, |c| c.chains * (c.steps + 21)))
        .collect();
    let method: Vec<String> = rounds
        .chains
        .iter()
        .map(|c| {
            if c.is_some() {
                "flow-mcmc".to_string()
            } else {
                "importance".to_string()
            }
        })
        .collect();
    let total: usize = samples_used.iter().sum();
    let config = serde_json::json!({
        "seed": cfg.seed,
        "train_seconds": cfg.train_seconds,
        "train_steps": cfg.train_steps,
        "samples": cfg.samples,
        "cv_tol": cfg.cv_tol,
        "max_samples": cfg.max_samples,
        "estimate_seconds": cfg.estimate_seconds,
        "witness_sweeps": cfg.witness_sweeps,
        "repairs": cfg.repairs,
        "flow": cfg.flow,
        "load_model": cfg.load_model,
    });
    let result = SweepResult {
        system: cfg.system.clone(),
        params,
        temperatures: temps.clone(),
        u: col(&|t| t.u.value),
        u_se: col(&|t| t.u.se),
        cv: col(&|t| t.cv.value),
        cv_se: col(&|t| t.cv.se),
        cv_deriv: deriv.iter().map(|e| e.value).collect(),
        cv_deriv_se: deriv.iter().map(|e| e.se).collect(),
        log_z: col(&|t| t.log_z.value),
        log_z_se: col(&|t| t.log_z.se),
        f: col(&|t| t.f.value),
        s: col(&|t| t.s.value),
        ess_fraction: col(&|t| t.ess_fraction),
        pareto_k: col(&|t| t.pareto_k),
        samples_used,
        method,
        flow_mcmc: rounds.chains,
        target_reached: rounds.reached,
        verdict: checks::verdict(&temps, &all),
        checks: all,
        trusted,
        repairs,
        witness: witness.map(|w| WitnessSummary {
            points,
            rungs: w.rungs.clone(),
            round_trips: w.round_trips,
            ladders: w.ladders,
            sweeps: cfg.witness_sweeps,
            seconds: w.seconds,
        }),
        exact: exact.map(|r| ExactCurves {
            u: r.iter().map(|x| x.u).collect(),
            cv: r.iter().map(|x| x.cv).collect(),
            log_z: r.iter().map(|x| x.log_z).collect(),
        }),
        train: train_summary,
        samples: cfg.samples,
        estimate_seconds,
        estimate_samples_per_s: total as f64 / rounds.seconds.max(1e-9),
        config,
        thermoflow_version: env!("CARGO_PKG_VERSION").into(),
        loss_history: history.loss,
        thermo: th,
    };
    Ok((result, flow, energy))
}
