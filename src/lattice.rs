//! Lattice φ⁴ with flows: a temperature-conditioned checkerboard flow trained for `phi4`, and
//! the summary of a Markov chain on the lattice (observables with errors, τ_int and its cost).
//!
//! The coupling that conditions the flow is an overall β = 1/T multiplying the action,
//! p(φ | T) ∝ exp(−S(φ)/T): one flow trained over T ∈ [t_min, t_max] serves the whole sweep of
//! β, the lattice analogue of the temperature sweep. Training: HMC samples at 8 temperatures
//! across the range, each augmented by a random lattice symmetry (translation, transposition,
//! reflection, φ → −φ), give the forward-KL warm start; then reverse KL (with ∇S as a graph
//! input) plus a forward-KL term ([`crate::train::train_with_data`]).
//!
//! Observables per configuration: |M|/V and M²/V with M = Σ_x φ_x, V = L², so that
//! ⟨|M|⟩/V is the absolute magnetisation per site and χ₂ = ⟨M²⟩/V the two-point
//! susceptibility. Errors are batch means over the chains' series; the cost of one effectively
//! independent sample is measured as τ_int(|M|) × (energy evaluations per step) and
//! τ_int(|M|) × (seconds per step).

use serde::Serialize;

use crate::error::Result;
use crate::flows::{builders::lattice_flow, Conditioning, Flow};
use crate::mcmc::{batch_means, tau_int, ChainRun};
use crate::systems::{Energy, Phi4};
use crate::train::{hmc_data, train_with_data, Observer, TrainConfig, TrainReport};

/// Settings of a φ⁴ flow: architecture and training.
#[derive(Clone, Debug, Serialize)]
pub struct Phi4FlowConfig {
    /// Checkerboard coupling layers (alternating parity).
    pub layers: usize,
    /// Hidden channels of each conditioner convolution.
    pub hidden: usize,
    /// Hidden convolutions per conditioner.
    pub depth: usize,
    /// Training budget and optimiser (its `t_min`, `t_max` set the range of T = 1/β).
    pub train: TrainConfig,
    /// HMC trajectories per chain (8 chains) at each of the 8 data temperatures.
    pub hmc_per_chain: usize,
}

/// The lattice flow's training batch (a lattice coupling step costs ~30 times a coupling
/// flow's); continued training and the sweep's repairs keep it.
pub const LATTICE_BATCH: usize = 64;

impl Phi4FlowConfig {
    /// Defaults around temperature `t`: T ∈ [t/1.25, 1.25 t], 12 layers with 8 hidden channels
    /// and one hidden convolution, batch 64, 10 000 steps (30 % forward-KL warm start, then reverse KL
    /// plus ½ forward KL), 2000 HMC trajectories per chain.
    pub fn new(t: f64) -> Phi4FlowConfig {
        let mut train = TrainConfig::around(t);
        train.steps = Some(10_000);
        train.batch = LATTICE_BATCH;
        train.warm_fraction = 0.3;
        train.forward_weight = 0.5;
        Phi4FlowConfig {
            layers: 12,
            hidden: 8,
            depth: 1,
            train,
            hmc_per_chain: 2000,
        }
    }
}

/// Build and train a temperature-conditioned lattice flow for `phi`.
pub fn train_phi4_flow(
    phi: &Phi4,
    cfg: &Phi4FlowConfig,
    observers: &mut [&mut dyn Observer],
) -> Result<(Flow, TrainReport)> {
    let tc = &cfg.train;
    crate::systems::check_temperature(tc.t_min)?;
    crate::systems::check_temperature(tc.t_max)?;
    if cfg.layers == 0 || cfg.hidden == 0 {
        return crate::error::input_err("a lattice flow needs ≥ 1 layer and ≥ 1 hidden channel");
    }
    let cond = Conditioning::Temperature {
        t_min: tc.t_min,
        t_max: tc.t_max,
    };
    let mut flow = lattice_flow(phi.l, cond, cfg.layers, cfg.hidden, cfg.depth, tc.seed)?;
    let mut data = hmc_data(phi, tc, 8, cfg.hmc_per_chain)?;
    let mut rng = crate::rng::stream(tc.seed, "phi4/data-symmetry", 0);
    for mut row in data.x.rows_mut() {
        let r = row.as_slice_mut().expect("rows of a standard-layout array");
        phi.random_symmetry(r, &mut rng);
    }
    data.source = "HMC (symmetry-augmented)".into();
    let report = train_with_data(&mut flow, phi, tc, Some(data), observers)?;
    Ok((flow, report))
}

/// Observables recorded along a φ⁴ chain: [|M|/V, M²/V, S].
pub fn phi4_observables(phi: &Phi4, x: &[f64]) -> Vec<f64> {
    let [abs_m, m2] = phi.observables(x);
    vec![abs_m, m2, phi.energy(x)]
}

/// A φ⁴ chain's estimates and costs (the `thermoflow mcmc` JSON fields).
#[derive(Clone, Debug, Serialize)]
pub struct Phi4Summary {
    /// χ₂ = ⟨M²⟩/V.
    pub chi2: f64,
    /// Its standard error (batch means).
    pub chi2_se: f64,
    /// ⟨|M|⟩/V.
    pub abs_m: f64,
    /// Its standard error.
    pub abs_m_se: f64,
    /// ⟨S⟩.
    pub action: f64,
    /// Its standard error.
    pub action_se: f64,
    /// Acceptance rate.
    pub acceptance: f64,
    /// τ_int of |M| in steps of the chain.
    pub tau_int_abs_m: f64,
    /// τ_int of M²/V in steps.
    pub tau_int_chi2: f64,
    /// Energy (or gradient) evaluations, burn-in included.
    pub energy_evaluations: usize,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
    /// Recorded steps per chain × chains.
    pub samples: usize,
    /// Energy evaluations per recorded step of one chain.
    pub evaluations_per_step: f64,
    /// τ_int(|M|) × evaluations per step: evaluations per effectively independent |M|.
    pub tau_abs_m_evaluations: f64,
    /// τ_int(|M|) × seconds per step: seconds per effectively independent |M|.
    pub tau_abs_m_seconds: f64,
}

/// Summarise a chain run whose observables are [`phi4_observables`].
pub fn summarize_phi4(run: &ChainRun) -> Result<Phi4Summary> {
    if run.series.len() < 3 || run.series[0].is_empty() {
        return crate::error::input_err("a φ⁴ chain records |M|/V, M²/V and S");
    }
    let mean = |k: usize| {
        batch_means(&run.series[k], 20, |c| {
            c.iter().sum::<f64>() / c.len() as f64
        })
    };
    let (am, chi, s) = (mean(0), mean(1), mean(2));
    let samples: usize = run.series[0].iter().map(|c| c.len()).sum();
    let per_step = run.energy_evaluations as f64 / samples.max(1) as f64;
    let secs_per_step = run.seconds / samples.max(1) as f64;
    let tau = tau_int(&run.series[0]);
    Ok(Phi4Summary {
        chi2: chi.value,
        chi2_se: chi.se,
        abs_m: am.value,
        abs_m_se: am.se,
        action: s.value,
        action_se: s.se,
        acceptance: run.acceptance,
        tau_int_abs_m: tau,
        tau_int_chi2: tau_int(&run.series[1]),
        energy_evaluations: run.energy_evaluations,
        seconds: run.seconds,
        samples,
        evaluations_per_step: per_step,
        tau_abs_m_evaluations: tau * per_step,
        tau_abs_m_seconds: tau * secs_per_step,
    })
}
