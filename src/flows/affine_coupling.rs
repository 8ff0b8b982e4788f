//! Affine coupling (RealNVP; Dinh, Sohl-Dickstein & Bengio 2017).
//!
//! Split x = (x_A, x_B) (alternating halves between layers via `flip`); with
//! (s̃, t) = MLP([x_A, c]) and a bounded log-scale s = a·tanh(s̃/a):
//!
//! ```text
//! forward:  y_A = z_A,  y_B = z_B ⊙ exp(s) + t,      log|det J| = Σ s
//! inverse:  z_B = (y_B − t) ⊙ exp(−s),                log|det J⁻¹| = −Σ s
//! ```
//!
//! The conditioner's last layer starts at zero: s = t = 0, the identity.

use serde::{Deserialize, Serialize};

use super::mlp::{Activation, Mlp};
use super::params::{ParamSet, Scope};
use super::{columns, conditioner_input, coupling_join, coupling_split, Bijection};
use crate::engine::Var;

/// RealNVP coupling layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AffineCoupling {
    dim: usize,
    cond_dim: usize,
    flip: bool,
    /// Bound a on |s|.
    pub scale_bound: f64,
    /// Conditioner producing (s̃, t).
    pub conditioner: Mlp,
}

impl AffineCoupling {
    /// A coupling on `dim` coordinates reading `cond_dim` condition features.
    pub fn new(
        dim: usize,
        cond_dim: usize,
        flip: bool,
        width: usize,
        depth: usize,
        act: Activation,
        seed: u64,
    ) -> Self {
        let (a, b) = coupling_split(dim, flip);
        let n_out = 2 * (b.1 - b.0);
        AffineCoupling {
            dim,
            cond_dim,
            flip,
            scale_bound: 3.0,
            conditioner: Mlp::new(a.1 - a.0 + cond_dim, width, depth, n_out, act, seed),
        }
    }

    fn shift_scale<'g>(
        &self,
        s: &Scope<'g>,
        a: Option<Var<'g>>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (_, rb) = coupling_split(self.dim, self.flip);
        let m = rb.1 - rb.0;
        let out = self
            .conditioner
            .apply(&s.child("conditioner"), conditioner_input(a, c));
        let raw = out.slice(1, 0, m);
        let t = out.slice(1, m, 2 * m);
        let bound = self.scale_bound;
        let log_scale = raw.mul_scalar(1.0 / bound).tanh().mul_scalar(bound);
        (log_scale, t)
    }
}

impl Bijection for AffineCoupling {
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
        let (ls, t) = self.shift_scale(s, a, c);
        let y = b * ls.exp() + t;
        (coupling_join(a, y, self.flip), ls.sum(1))
    }
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (ra, rb) = coupling_split(self.dim, self.flip);
        let (a, b) = (columns(x, ra), x.slice(1, rb.0, rb.1));
        let (ls, t) = self.shift_scale(s, a, c);
        let z = (b - t) * ls.neg().exp();
        (coupling_join(a, z, self.flip), ls.sum(1).neg())
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![("conditioner".into(), &self.conditioner.params)]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![("conditioner".into(), &mut self.conditioner.params)]
    }
    fn describe(&self) -> String {
        format!(
            "AffineCoupling(dim={}, cond={}, flip={}, mlp={:?} {:?})",
            self.dim, self.cond_dim, self.flip, self.conditioner.sizes, self.conditioner.activation
        )
    }
}
