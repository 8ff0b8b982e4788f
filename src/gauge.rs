//! Flows on angles, conditioned on T = 1/β and trained by reverse KL: the gauge-equivariant
//! flow ([`crate::flows::GaugeCoupling`]) for U(1) gauge links (`u1`) and the checkerboard flow
//! of circular splines ([`crate::flows::SpinCoupling`]) for planar spins (`xy`):
//!
//! ```text
//! loss = E_{z ~ U(−π, π)^D} [ log q(f(z) | T) + E(f(z))/T ]  (= KL(q‖p) − log Z)
//! ```
//!
//! with ∇E from the system's analytic gradient as a graph input
//! ([`crate::train::train_with_data`] without data). No forward-KL data: HMC, the obvious
//! source, freezes in one topological sector at large β (τ_int(Q) ≈ 256 trajectories at β = 5,
//! L = 8), and data from one sector would teach the flow to miss the others.

use serde::Serialize;

use crate::error::Result;
use crate::flows::{
    builders::{gauge_flow, spin_flow},
    Conditioning, Flow,
};
use crate::systems::{u1::U1, Xy};
use crate::train::{train_with_data, Observer, TrainConfig, TrainReport};

/// Settings of a flow on angles (gauge links, planar spins): architecture and training.
#[derive(Clone, Debug, Serialize)]
pub struct AngleFlowConfig {
    /// Couplings (gauge links: cycling through both link directions and four stripe offsets;
    /// spins: alternating checkerboard parity).
    pub layers: usize,
    /// Hidden channels of each conditioner convolution.
    pub hidden: usize,
    /// Hidden convolutions per conditioner.
    pub depth: usize,
    /// Bins of each circular spline.
    pub bins: usize,
    /// Circular splines per updated plaquette or spin, composed half a turn apart
    /// ([`crate::flows::GaugeCoupling`], [`crate::flows::SpinCoupling`]).
    pub splines: usize,
    /// Training budget and optimiser (its `t_min`, `t_max` set the range of T = 1/β).
    pub train: TrainConfig,
}

/// The angle flows' training batch (one step costs about what a φ⁴ lattice step costs).
pub const GAUGE_BATCH: usize = 64;

/// The U(1) flow's settings, by their former name.
pub type U1FlowConfig = AngleFlowConfig;

impl AngleFlowConfig {
    /// Defaults around temperature `t`: T ∈ [t/1.25, max(1.25 t, 1)], 16 layers (each link
    /// updated twice), 8 hidden channels in 2 hidden convolutions, two 8-bin splines (Kanwar et
    /// al. 2020 use 2 × 8 channels), batch 64, 5000 steps of reverse KL. Two splines half a turn
    /// apart, against one: flow-MCMC at β = 5, L = 8 (the flow alone, 2000 steps) accepted 2.8 %
    /// of the proposals against 0.85 %, for 30 % more training time. A cold T trains up to β = 1 as
    /// well, where the flow learns easily, and the hot end teaches the cold: at β = 5, L = 8,
    /// flow-MCMC with a flow trained over T ∈ [0.2, 1] was accepted 1.5 % of the time (τ_int(Q)
    /// 186 steps), over [0.16, 0.25] 0.76 % (287).
    pub fn new(t: f64) -> AngleFlowConfig {
        let mut train = TrainConfig::new(t / 1.25, (1.25 * t).max(1.0));
        train.steps = Some(5000);
        train.batch = GAUGE_BATCH;
        train.warm_fraction = 0.0;
        train.forward_weight = 0.0;
        train.pt_sweeps = 0;
        AngleFlowConfig {
            layers: 16,
            hidden: 8,
            depth: 2,
            bins: 8,
            splines: 2,
            train,
        }
    }

    /// Defaults for planar spins around temperature `t`: T ∈ [t/1.25, 1.25 t], 8 checkerboard
    /// couplings in spin 0's frame (each spin updated four times; [`spin_flow`]), 8 hidden channels in 2 hidden convolutions, two
    /// 8-bin splines (one alone keeps each spin's density at ±π at the base's 1/2π, while the
    /// target's, given the neighbours, peaks there when they point that way: the system is
    /// symmetric under a global rotation), batch 64, 5000 steps of reverse KL.
    pub fn xy(t: f64) -> AngleFlowConfig {
        let mut cfg = AngleFlowConfig::new(t);
        cfg.train.t_max = 1.25 * t;
        cfg.layers = 8;
        cfg
    }

    /// The range's conditioning, once the settings are checked.
    fn conditioning(&self) -> Result<Conditioning> {
        let tc = &self.train;
        crate::systems::check_temperature(tc.t_min)?;
        crate::systems::check_temperature(tc.t_max)?;
        if self.layers == 0 || self.hidden == 0 || self.bins == 0 || self.splines == 0 {
            return crate::error::input_err(
                "a flow on angles needs ≥ 1 layer, ≥ 1 hidden channel, ≥ 1 spline and ≥ 1 bin",
            );
        }
        Ok(Conditioning::Temperature {
            t_min: tc.t_min,
            t_max: tc.t_max,
        })
    }
}

/// Build and train a temperature-conditioned gauge flow for `u1`.
pub fn train_u1_flow(
    u1: &U1,
    cfg: &AngleFlowConfig,
    observers: &mut [&mut dyn Observer],
) -> Result<(Flow, TrainReport)> {
    train_on_angles(cfg, u1.l, gauge_flow, u1, observers)
}

/// Build and train a temperature-conditioned spin flow for `xy`.
pub fn train_xy_flow(
    xy: &Xy,
    cfg: &AngleFlowConfig,
    observers: &mut [&mut dyn Observer],
) -> Result<(Flow, TrainReport)> {
    train_on_angles(cfg, xy.l, spin_flow, xy, observers)
}

/// A builder of flows on angles ([`gauge_flow`], [`spin_flow`]): side, conditioning, layers,
/// hidden channels, depth, bins, splines, seed.
type AngleBuilder = fn(usize, Conditioning, usize, usize, usize, usize, usize, u64) -> Result<Flow>;

/// The flow `build` makes for side `l` with `cfg`'s architecture, trained by reverse KL.
fn train_on_angles(
    cfg: &AngleFlowConfig,
    l: usize,
    build: AngleBuilder,
    energy: &dyn crate::systems::Energy,
    observers: &mut [&mut dyn Observer],
) -> Result<(Flow, TrainReport)> {
    let (tc, cond) = (&cfg.train, cfg.conditioning()?);
    let mut flow = build(
        l,
        cond,
        cfg.layers,
        cfg.hidden,
        cfg.depth,
        cfg.bins,
        cfg.splines,
        tc.seed,
    )?;
    let report = train_with_data(&mut flow, energy, tc, None, observers)?;
    Ok((flow, report))
}
