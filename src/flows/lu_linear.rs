//! LU linear layer (Glow-style; Kingma & Dhariwal 2018): x = P L U z + b.
//!
//! P is a fixed permutation (from the seed), L unit lower-triangular, U upper-triangular with
//! diagonal exp(u_ii). One parameter matrix `w` holds L's strict lower part, U's strict upper
//! part and log U_ii on the diagonal. log|det J| = Σ_i u_ii. Inverse:
//! z = U⁻¹ L⁻¹ Pᵀ (x − b) with L⁻¹ = Σ(−N_L)^k and U⁻¹ = (I + D⁻¹N_U)⁻¹ D⁻¹ (nilpotent series).
//! Zero parameters: x = P z (a pure permutation, log-det 0).

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::linear::{masks, unipotent_inverse};
use super::params::{ParamSet, Scope};
use super::permutation::permutation_matrix;
use super::Bijection;
use crate::engine::{Dim, Var};

/// Permuted LU-decomposed linear layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LuLinear {
    dim: usize,
    /// The fixed permutation: x_i = (LUz)_{perm\[i\]}.
    pub perm: Vec<usize>,
    /// `w` and `shift`.
    pub params: ParamSet,
}

impl LuLinear {
    /// A random fixed permutation from `seed`, identity L and U.
    pub fn new(dim: usize, seed: u64) -> LuLinear {
        let mut perm: Vec<usize> = (0..dim).collect();
        perm.shuffle(&mut super::params::init_rng(seed));
        let mut params = ParamSet::default();
        params.push("w", &[dim, dim], vec![0.0; dim * dim]);
        params.push("shift", &[dim], vec![0.0; dim]);
        LuLinear { dim, perm, params }
    }

    /// A fresh layer with this one's dimension and permutation, once both are checked.
    pub(crate) fn template(&self) -> crate::Result<LuLinear> {
        let d = self.dim;
        let declared = d.checked_mul(d).and_then(|n| n.checked_add(d));
        super::params::check_count(declared, &[&self.params])?;
        let perm = super::Permutation::new(self.perm.clone())?;
        if perm.perm.len() != d {
            return crate::error::input_err(format!(
                "its permutation has {} entries, not {d}",
                perm.perm.len()
            ));
        }
        Ok(LuLinear {
            perm: self.perm.clone(),
            ..LuLinear::new(d, 0)
        })
    }
}

impl Bijection for LuLinear {
    fn dim(&self) -> usize {
        self.dim
    }
    fn cond_dim(&self) -> usize {
        0
    }
    fn forward_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        z: Var<'g>,
        _c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let d = self.dim;
        let (w, b) = (s.param(&self.params, "w"), s.param(&self.params, "shift"));
        let (eye, lower, upper) = masks(w, d);
        let diag = w * eye;
        let l = w * lower + eye;
        let u = w * upper + eye * diag.exp();
        let q = permutation_matrix(w, &self.perm);
        // Rows: x = z Uᵀ Lᵀ Q + b.
        let x = z.matmul(u.t()).matmul(l.t()).matmul(q) + b;
        (x, diag.sum_all().expand(0, Dim::Batch))
    }
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        _c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let d = self.dim;
        let (w, b) = (s.param(&self.params, "w"), s.param(&self.params, "shift"));
        let (eye, lower, upper) = masks(w, d);
        let diag = w * eye;
        let dinv = eye * diag.neg().exp();
        let linv = unipotent_inverse(w * lower, eye, d);
        let uinv = unipotent_inverse(dinv.matmul(w * upper), eye, d).matmul(dinv);
        let q = permutation_matrix(w, &self.perm);
        let z = (x - b).matmul(q.t()).matmul(linv.t()).matmul(uinv.t());
        (z, diag.sum_all().neg().expand(0, Dim::Batch))
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![(String::new(), &self.params)]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![(String::new(), &mut self.params)]
    }
    fn describe(&self) -> String {
        format!("LuLinear(dim={}, perm={:?})", self.dim, self.perm)
    }
}
