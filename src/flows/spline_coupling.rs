//! Rational-quadratic spline coupling (Neural Spline Flows; Durkan et al. 2019).
//!
//! Split x = (x_A, x_B); each coordinate of x_B goes through its own monotonic spline
//! (see [`super::spline`]) whose 3K − 1 parameters come from MLP([x_A, c]):
//!
//! ```text
//! forward:  y_B,i = g_i(z_B,i),   log|det J| = Σ_i log g_i'(z_B,i)
//! inverse:  z_B,i = g_i⁻¹(y_B,i), log|det J⁻¹| = −Σ_i log g_i'(z_B,i)
//! ```
//!
//! Zero conditioner output gives uniform bins and unit derivatives: the identity.

use serde::{Deserialize, Serialize};

use super::mlp::{Activation, Mlp};
use super::params::{ParamSet, Scope};
use super::spline::{fused, n_params};
use super::{columns, conditioner_input, coupling_join, coupling_split, Bijection};
use crate::engine::Var;

/// Neural-spline coupling layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplineCoupling {
    dim: usize,
    cond_dim: usize,
    flip: bool,
    /// Number of bins K.
    pub bins: usize,
    /// Tail bound B.
    pub bound: f64,
    /// Conditioner producing the spline parameters.
    pub conditioner: Mlp,
}

impl SplineCoupling {
    /// A spline coupling on `dim` coordinates reading `cond_dim` condition features.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dim: usize,
        cond_dim: usize,
        flip: bool,
        bins: usize,
        bound: f64,
        width: usize,
        depth: usize,
        act: Activation,
        seed: u64,
    ) -> Self {
        let (a, b) = coupling_split(dim, flip);
        let n_out = (b.1 - b.0) * n_params(bins);
        SplineCoupling {
            dim,
            cond_dim,
            flip,
            bins,
            bound,
            conditioner: Mlp::new(a.1 - a.0 + cond_dim, width, depth, n_out, act, seed),
        }
    }

    /// The splines of `b` with parameters from the conditioner of (a, c).
    fn splines<'g>(
        &self,
        s: &Scope<'g>,
        a: Option<Var<'g>>,
        b: Var<'g>,
        c: Option<Var<'g>>,
        inverse: bool,
    ) -> (Var<'g>, Var<'g>) {
        let raw = self
            .conditioner
            .apply(&s.child("conditioner"), conditioner_input(a, c));
        fused(raw, b, self.bins, self.bound, inverse)
    }
}

impl Bijection for SplineCoupling {
    fn dim(&self) -> usize {
        self.dim
    }
    fn cond_dim(&self) -> usize {
        self.cond_dim
    }
    fn forward_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        z: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (ra, rb) = coupling_split(self.dim, self.flip);
        let (a, b) = (columns(z, ra), z.slice(1, rb.0, rb.1));
        let (y, ld) = self.splines(s, a, b, c, false);
        (coupling_join(a, y, self.flip), ld.sum(1))
    }
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (ra, rb) = coupling_split(self.dim, self.flip);
        let (a, b) = (columns(x, ra), x.slice(1, rb.0, rb.1));
        let (z, ld) = self.splines(s, a, b, c, true);
        (coupling_join(a, z, self.flip), ld.sum(1))
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![("conditioner".into(), &self.conditioner.params)]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![("conditioner".into(), &mut self.conditioner.params)]
    }
    fn describe(&self) -> String {
        format!(
            "SplineCoupling(dim={}, cond={}, flip={}, bins={}, bound={}, mlp={:?} {:?})",
            self.dim,
            self.cond_dim,
            self.flip,
            self.bins,
            self.bound,
            self.conditioner.sizes,
            self.conditioner.activation
        )
    }
}
