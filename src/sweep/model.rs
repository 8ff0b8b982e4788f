//! The sweep's flow: trained with the sweep's recipe (a coupling flow, or for a lattice field the
//! lattice flow with its own recipe), or loaded and checked against the system.

use super::{SweepConfig, TrainSummary};
use crate::error::Result;
use crate::flows::{io, Conditioning, Flow};
use crate::gauge::{train_u1_flow, train_xy_flow, AngleFlowConfig, GAUGE_BATCH};
use crate::lattice::{train_phi4_flow, Phi4FlowConfig, LATTICE_BATCH};
use crate::systems::{Energy, Structure};
use crate::train::{
    train, train_new, train_with_data, History, Observer, Progress, TrainConfig, TrainReport,
    TrainingData,
};

pub(super) fn train_flow(
    energy: &dyn Energy,
    cfg: &SweepConfig,
    history: &mut History,
) -> Result<(Flow, TrainSummary)> {
    let tc = budgeted(cfg);
    let (flow, report) = observed(history, cfg.progress, |obs| match energy.structure() {
        // Coupling flows, on the system's coordinates where it has them.
        Structure::Generic | Structure::Chain(_) | Structure::Cluster(_) => {
            train_new(energy, &cfg.flow, &tc, obs)
        }
        // Gauge links: the gauge-equivariant flow over the whole range, by reverse KL.
        Structure::Gauge(u1) => {
            let mut fc = AngleFlowConfig::new(cfg.t_min);
            // One spline per plaquette, not the mcmc command's two: the sweep's L = 8 result was
            // verified with one, and with two after a short training budget its importance-
            // sampling C_V error bars came out too small at L = 4 (docs/sweep.md, "Gauge links").
            fc.splines = 1;
            take_budget(&mut fc.train, &tc);
            train_u1_flow(u1, &fc, obs)
        }
        // Planar spins: the checkerboard flow of circular splines, by reverse KL.
        Structure::Spins(xy) => {
            let mut fc = AngleFlowConfig::xy(cfg.t_min);
            take_budget(&mut fc.train, &tc);
            train_xy_flow(xy, &fc, obs)
        }
        // Fields: the translation-equivariant lattice flow, conditioned over the whole range,
        // on its own recipe (symmetry-augmented HMC data, then reverse KL) with this budget.
        Structure::Lattice(phi) => {
            let mut fc = Phi4FlowConfig::new(cfg.t_min);
            take_budget(&mut fc.train, &tc);
            train_phi4_flow(phi, &fc, obs)
        }
    })?;
    Ok((flow, summary(&report, false)))
}

/// Continue training a loaded flow with the sweep's recipe and budget over [T_min, T_max].
pub(super) fn continue_training(
    mut flow: Flow,
    energy: &dyn Energy,
    cfg: &SweepConfig,
    history: &mut History,
) -> Result<(Flow, TrainSummary)> {
    let mut tc = budgeted(cfg);
    tc.batch = recipe_batch(energy, &tc);
    let report = train_observed(&mut flow, energy, &tc, None, cfg.progress, history)?;
    Ok((flow, summary(&report, true)))
}

/// The batch of the recipe that trained a flow for `energy`: a lattice flow's own
/// ([`LATTICE_BATCH`]), the sweep's otherwise. Continued training and repairs keep it: at the
/// sweep's 512 a φ⁴ repair of half the training's steps took 4 times the training's time.
pub(super) fn recipe_batch(energy: &dyn Energy, tc: &TrainConfig) -> usize {
    match energy.structure() {
        Structure::Lattice(_) => LATTICE_BATCH,
        Structure::Gauge(_) | Structure::Spins(_) => GAUGE_BATCH,
        _ => tc.batch,
    }
}

/// A flow's own recipe `own` with the sweep's range, budget and seed from `tc`.
fn take_budget(own: &mut TrainConfig, tc: &TrainConfig) {
    own.t_min = tc.t_min;
    own.t_max = tc.t_max;
    own.seconds = tc.seconds;
    own.steps = tc.steps;
    own.seed = tc.seed;
}

/// The sweep's recipe over [T_min, T_max] with the config's budget and seed.
fn budgeted(cfg: &SweepConfig) -> TrainConfig {
    let mut tc = sweep_training(cfg.t_min, cfg.t_max);
    tc.seconds = cfg.train_seconds;
    tc.steps = cfg.train_steps;
    tc.seed = cfg.seed;
    tc
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
pub(super) fn train_observed(
    flow: &mut Flow,
    energy: &dyn Energy,
    tc: &TrainConfig,
    data: Option<TrainingData>,
    progress: bool,
    history: &mut History,
) -> Result<TrainReport> {
    observed(history, progress, |obs| match data {
        None => train(flow, energy, tc, obs),
        Some(d) => train_with_data(flow, energy, tc, Some(d), obs),
    })
}

/// Run `f` with the history observer, and the progress bar when asked.
fn observed<R>(
    history: &mut History,
    progress: bool,
    f: impl FnOnce(&mut [&mut dyn Observer]) -> R,
) -> R {
    let mut bar = Progress::new(1.0);
    let mut obs: Vec<&mut dyn Observer> = vec![history];
    if progress {
        obs.push(&mut bar);
    }
    f(&mut obs)
}

pub(super) fn load_flow(
    path: &std::path::Path,
    cfg: &SweepConfig,
    energy: &dyn Energy,
) -> Result<Flow> {
    let flow = io::load_for(path, &cfg.system, energy)?;
    if let Conditioning::Temperature { t_min, t_max } = flow.conditioning() {
        if cfg.t_min < t_min * 0.999 || cfg.t_max > t_max * 1.001 {
            eprintln!(
                "warning: sweeping [{}, {}] with a model trained on [{t_min}, {t_max}]: outside it the flow extrapolates",
                cfg.t_min, cfg.t_max
            );
        }
    }
    Ok(flow)
}
