//! Factory functions for the standard flows (in the style of zuko/FlowJAX) and a serialisable
//! configuration.

use serde::{Deserialize, Serialize};

use super::flow::{Conditioning, Flow};
use super::mlp::Activation;
use super::spline::{DEFAULT_BINS, DEFAULT_BOUND};
use super::transformer::Transformer;
use super::{Coordinates, Coupling, Layer, LinearFlow, Radial};
use crate::error::Result;
use crate::systems::Energy;

/// Configuration of a coupling flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CouplingConfig {
    /// Number of coupling layers (alternating halves).
    pub layers: usize,
    /// Conditioner hidden width.
    pub hidden: usize,
    /// Conditioner hidden layers.
    pub depth: usize,
    /// Conditioner nonlinearity.
    pub activation: Activation,
    /// Affine or spline.
    pub transformer: Transformer,
    /// Initialisation seed.
    pub seed: u64,
}

impl Default for CouplingConfig {
    /// 8 spline layers (K = 8, B = 5), conditioner 2×64 tanh.
    fn default() -> Self {
        CouplingConfig {
            layers: 8,
            hidden: 64,
            depth: 2,
            activation: Activation::Tanh,
            transformer: Transformer::Spline {
                bins: DEFAULT_BINS,
                bound: DEFAULT_BOUND,
            },
            seed: 0,
        }
    }
}

/// The flow every command trains unless told otherwise: 6 rational-quadratic spline couplings
/// (K = 8, B = 5), conditioner 2×48 tanh.
pub fn default_flow() -> CouplingConfig {
    CouplingConfig {
        layers: 6,
        hidden: 48,
        ..CouplingConfig::default()
    }
}

/// A coupling flow on `dim` coordinates: `cfg.layers` couplings with alternating halves.
pub fn coupling_flow(dim: usize, conditioning: Conditioning, cfg: &CouplingConfig) -> Result<Flow> {
    cfg.transformer.check()?;
    let c = conditioning.feature_dim();
    let layers = (0..cfg.layers)
        .map(|i| {
            let flip = i % 2 == 1;
            let seed = crate::rng::derive(cfg.seed, "flow/layer", i as u64);
            Layer::Coupling(Coupling::new(
                dim,
                c,
                flip,
                cfg.transformer,
                cfg.hidden,
                cfg.depth,
                cfg.activation,
                seed,
            ))
        })
        .collect();
    Flow::new(dim, conditioning, layers)
}

/// A coupling flow for `energy`: on its system coordinates where its structure has them (a
/// chain's bond lengths and angles, a cluster's centre-of-mass-free modes; see
/// [`Coordinates::for_system`]), on the state otherwise.
pub fn system_coupling_flow(
    energy: &dyn Energy,
    conditioning: Conditioning,
    cfg: &CouplingConfig,
) -> Result<Flow> {
    crate::systems::flows_apply(energy)?;
    match Coordinates::for_system(energy) {
        None => coupling_flow(energy.dim(), conditioning, cfg),
        Some(c) => {
            let inner = coupling_flow(c.flow_dim(), conditioning, cfg)?;
            Flow::with_coordinates(c, conditioning, inner.layers().to_vec())
        }
    }
}

/// `n` radial layers (conditioned through small heads when the flow is conditioned).
pub fn radial_flow(dim: usize, conditioning: Conditioning, n: usize, seed: u64) -> Result<Flow> {
    let c = conditioning.feature_dim();
    let layers = (0..n)
        .map(|i| {
            Layer::Radial(Radial::new(
                dim,
                c,
                16,
                crate::rng::derive(seed, "flow/layer", i as u64),
            ))
        })
        .collect();
    Flow::new(dim, conditioning, layers)
}

/// A single lower-triangular linear layer x = L z + μ (identity at start).
pub fn linear_flow(dim: usize, conditioning: Conditioning) -> Result<Flow> {
    Flow::new(dim, conditioning, vec![Layer::Linear(LinearFlow::new(dim))])
}

/// A flow for fields on an L×L periodic lattice: `n` checkerboard couplings with periodic
/// convolutional conditioners (`hidden` channels, `depth` hidden convolutions), alternating
/// parity.
pub fn lattice_flow(
    l: usize,
    conditioning: Conditioning,
    n: usize,
    hidden: usize,
    depth: usize,
    seed: u64,
) -> Result<Flow> {
    let c = conditioning.feature_dim();
    let layers = (0..n)
        .map(|i| {
            Layer::LatticeCoupling(super::LatticeCoupling::new(
                l,
                c,
                i % 2,
                hidden,
                depth,
                crate::rng::derive(seed, "flow/layer", i as u64),
            ))
        })
        .collect();
    Flow::new(l * l, conditioning, layers)
}

/// A gauge-equivariant flow for U(1) links on an L × L torus ([`super::GaugeCoupling`]):
/// `n` couplings cycling through the link directions and the four stripe offsets (μ = i mod 2,
/// offset = ⌊i/2⌋ mod 4; offsets beyond L − 1 skipped), each with `splines` composed K-bin
/// circular splines and a periodic CNN conditioner (`hidden` channels, `depth` hidden
/// convolutions), on the uniform base of [`Flow::on_angles`]. Refused for L ≡ 1 (mod 4), where
/// the stripes would touch, and without a spline.
#[allow(clippy::too_many_arguments)]
pub fn gauge_flow(
    l: usize,
    conditioning: Conditioning,
    n: usize,
    hidden: usize,
    depth: usize,
    bins: usize,
    splines: usize,
    seed: u64,
) -> Result<Flow> {
    if splines == 0 {
        return crate::error::input_err("a gauge coupling needs at least one spline");
    }
    if !super::GaugeCoupling::lattice_fits(l) {
        return crate::error::input_err(format!(
            "the gauge flow's stripes need L ≥ 2 and L ≢ 1 (mod 4); got L = {l}"
        ));
    }
    let c = conditioning.feature_dim();
    let cycle: Vec<(usize, usize)> = (0..8)
        .map(|k| (k % 2, k / 2))
        .filter(|&(_, o)| o < l)
        .collect();
    let layers = (0..n)
        .map(|i| {
            let (mu, offset) = cycle[i % cycle.len()];
            Layer::GaugeCoupling(super::GaugeCoupling::new(
                l,
                c,
                mu,
                offset,
                bins,
                splines,
                hidden,
                depth,
                crate::rng::derive(seed, "flow/layer", i as u64),
            ))
        })
        .collect();
    Flow::on_angles(2 * l * l, conditioning, layers)
}

/// A flow for planar spins on an L × L torus ([`super::SpinCoupling`]): `n` checkerboard
/// couplings of alternating parity in spin 0's frame (pinned), each with `splines` composed
/// K-bin circular splines and a periodic CNN conditioner (`hidden` channels, `depth` hidden
/// convolutions), then the frame's turn ([`super::SpinFrame`]), on the uniform base of
/// [`Flow::on_angles`]: log q is invariant under a global rotation, as the XY energy is (flow-MCMC
/// at L = 8 after 2000 training steps accepted 9 % of the proposals at T = 0.8 and 15 % at 1.2,
/// against 5 % and 7 % for the same couplings unpinned). Refused for odd L, where the
/// checkerboard would touch itself, and without a spline.
#[allow(clippy::too_many_arguments)]
pub fn spin_flow(
    l: usize,
    conditioning: Conditioning,
    n: usize,
    hidden: usize,
    depth: usize,
    bins: usize,
    splines: usize,
    seed: u64,
) -> Result<Flow> {
    if splines == 0 {
        return crate::error::input_err("a spin coupling needs at least one spline");
    }
    if !super::SpinCoupling::lattice_fits(l) {
        return crate::error::input_err(format!(
            "the spin flow's checkerboard needs an even L ≥ 2; got L = {l}"
        ));
    }
    let c = conditioning.feature_dim();
    let mut layers: Vec<Layer> = (0..n)
        .map(|i| {
            let layer = super::SpinCoupling::new(
                l,
                c,
                i % 2,
                bins,
                splines,
                hidden,
                depth,
                crate::rng::derive(seed, "flow/layer", i as u64),
            );
            Layer::SpinCoupling(layer.pinned())
        })
        .collect();
    layers.push(Layer::SpinFrame(super::SpinFrame::new(l * l)));
    Flow::on_angles(l * l, conditioning, layers)
}
