//! System coordinates: a fixed f64 bijection between the state x and the coordinates u = [y, e]
//! in which a system is simple. A flow's layers model y and the map is applied on the host after
//! the flow's graph ([`crate::flows::Flow::with_coordinates`]); Monte Carlo moves in u cross
//! barriers that Cartesian moves do not (a change of one chain angle is a pivot move; see
//! [`crate::mcmc::Moves`]).
//!
//! The flow models y (`flow_dim` values); the exact coordinates e (a centre of mass in a
//! harmonic trap, an overall rotation) have a known Boltzmann distribution p(e | T) and are
//! drawn from it. With g the fixed map, u = g⁻¹(x):
//!
//! ```text
//! x = g(y, e),   y ~ q(y | T),  e ~ p(e | T)
//! log q(x | T) = log q(y | T) + log p(e | T) − log|det ∂g/∂u|
//! ```
//!
//! so every estimate made from (x, log q(x)) is unchanged in form. Training pulls the energy's
//! gradient back to y ([`Coordinates::pull_back`]). Files: [`chain`] (bond lengths and angles of
//! a planar chain), [`cluster`] (centre-of-mass-free modes of an atomic cluster).

pub mod chain;
pub mod cluster;

pub use chain::ChainCoordinates;
pub use cluster::ClusterCoordinates;

use serde::{Deserialize, Serialize};

use crate::error::{input_err, Result};
use crate::systems::{Energy, Structure};

/// Which coordinates a flow's output is read in (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Coordinates {
    /// Bond lengths and turning angles of a planar chain.
    Chain(ChainCoordinates),
    /// Centre-of-mass-free modes of a 3-D cluster.
    Cluster(ClusterCoordinates),
}

macro_rules! each {
    ($s:expr, $c:ident => $e:expr) => {
        match $s {
            Coordinates::Chain($c) => $e,
            Coordinates::Cluster($c) => $e,
        }
    };
}

/// A state with its coordinates, from [`Coordinates::to_state`].
#[derive(Clone, Debug)]
pub struct Mapped {
    /// The state x.
    pub x: Vec<f64>,
    /// Its coordinates u = [y, e].
    pub u: Vec<f64>,
    /// log q(x | T) − log q(y | T) = log p(e | T) − log|det ∂g/∂u|.
    pub log_factor: f64,
}

impl Coordinates {
    /// The coordinates a system's structure calls for (None: the state itself).
    pub fn for_system(energy: &dyn Energy) -> Option<Coordinates> {
        match energy.structure() {
            Structure::Chain(b) => Some(Coordinates::Chain(ChainCoordinates::new(
                b.n, b.l0, b.k_bond, b.k_conf,
            ))),
            Structure::Cluster(c) => Some(Coordinates::Cluster(ClusterCoordinates {
                n: c.n,
                k_conf: c.k_conf,
            })),
            Structure::Generic
            | Structure::Lattice(_)
            | Structure::Gauge(_)
            | Structure::Spins(_) => None,
        }
    }
    /// Check the stored scales (after loading).
    pub fn check(&self) -> Result<()> {
        each!(self, c => c.check()).or_else(input_err)
    }
    /// Coordinates of the state.
    pub fn dim(&self) -> usize {
        each!(self, c => c.dim())
    }
    /// Coordinates the flow models (the first `flow_dim` of u).
    pub fn flow_dim(&self) -> usize {
        each!(self, c => c.flow_dim())
    }
    /// A one-line description.
    pub fn describe(&self) -> String {
        match self {
            Coordinates::Chain(c) => format!(
                "chain coordinates ({} bond lengths, {} angles; centre of mass and rotation exact)",
                c.n - 1,
                c.n - 2
            ),
            Coordinates::Cluster(c) => format!(
                "cluster coordinates ({} centre-of-mass-free modes; centre of mass exact)",
                3 * (c.n - 1)
            ),
        }
    }
    /// x = g(u) and log|det ∂g/∂u|.
    pub fn forward_and_log_det(&self, u: &[f64]) -> (Vec<f64>, f64) {
        each!(self, c => c.forward_and_log_det(u))
    }
    /// u = g⁻¹(x) and log|det ∂g⁻¹/∂x|.
    pub fn inverse_and_log_det(&self, x: &[f64]) -> (Vec<f64>, f64) {
        each!(self, c => c.inverse_and_log_det(x))
    }
    /// At u: (∂⟨g_x, g(u)⟩/∂y, ∂ log|det ∂g/∂u| / ∂y), y the flow's part of u.
    pub fn pull_back(&self, u: &[f64], g_x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        each!(self, c => c.pull_back(u, g_x))
    }
    /// log p(e | T) of the exact coordinates.
    pub fn exact_log_prob(&self, e: &[f64], t: f64) -> f64 {
        each!(self, c => c.exact_log_prob(e, t))
    }

    /// The state for flow coordinates `y` at temperature `t`, the exact ones drawn from
    /// p(e | T).
    pub fn to_state(&self, y: &[f64], t: f64, rng: &mut dyn rand::RngCore) -> Mapped {
        let m = self.flow_dim();
        let mut u = vec![0.0; self.dim()];
        u[..m].copy_from_slice(y);
        each!(self, c => c.sample_exact(t, rng, &mut u[m..]));
        let (x, ld) = self.forward_and_log_det(&u);
        let log_factor = self.exact_log_prob(&u[m..], t) - ld;
        Mapped { x, u, log_factor }
    }

    /// The coordinates of state `x` at temperature `t` (the flow's are the first `flow_dim`).
    pub fn to_flow(&self, x: &[f64], t: f64) -> Mapped {
        let (u, ild) = self.inverse_and_log_det(x);
        let log_factor = self.exact_log_prob(&u[self.flow_dim()..], t) + ild;
        Mapped {
            x: x.to_vec(),
            u,
            log_factor,
        }
    }

    /// ∇_y [U(g(u)) + T · log_factor] from ∇_x U at the mapped state: what the reverse-KL
    /// surrogate needs per sample (its loss is log q(y) + (U + T · log_factor)/T).
    pub fn energy_gradient(&self, mapped: &Mapped, grad_u: &[f64], t: f64) -> Vec<f64> {
        let (mut g, g_ld) = self.pull_back(&mapped.u, grad_u);
        for (a, b) in g.iter_mut().zip(g_ld) {
            *a -= t * b;
        }
        g
    }
}
