//! Fixed permutation of coordinates: x_i = z_{perm\[i\]}; log|det J| = 0. `reverse` is the
//! permutation d−1, …, 0. Applied as a product with a constant 0/1 matrix Q, Q_{perm\[i\], i} = 1
//! (x = z Q, z = x Qᵀ).

use serde::{Deserialize, Serialize};

use super::bijection::{zero_log_det, Bijection};
use super::params::{ParamSet, Scope};
use crate::engine::Var;

/// A fixed coordinate permutation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Permutation {
    /// x_i = z_{perm\[i\]}.
    pub perm: Vec<usize>,
    #[serde(skip)]
    empty: ParamSet,
}

impl Permutation {
    /// From an explicit permutation (checked).
    pub fn new(perm: Vec<usize>) -> crate::Result<Permutation> {
        let mut seen = vec![false; perm.len()];
        for &p in &perm {
            if p >= perm.len() || std::mem::replace(&mut seen[p], true) {
                return crate::error::input_err(format!("{perm:?} is not a permutation"));
            }
        }
        Ok(Permutation {
            perm,
            empty: ParamSet::default(),
        })
    }

    /// The same permutation, checked.
    pub(crate) fn template(&self) -> crate::Result<Permutation> {
        Permutation::new(self.perm.clone())
    }
    /// Reverse the order of `dim` coordinates.
    pub fn reverse(dim: usize) -> Permutation {
        Permutation {
            perm: (0..dim).rev().collect(),
            empty: ParamSet::default(),
        }
    }
}

/// The constant matrix Q with Q_{perm[i], i} = 1, in `v`'s graph.
pub(crate) fn permutation_matrix<'g>(v: Var<'g>, perm: &[usize]) -> Var<'g> {
    let d = perm.len();
    let mut q = vec![0.0; d * d];
    for (i, &p) in perm.iter().enumerate() {
        q[p * d + i] = 1.0;
    }
    v.builder().constant_tensor(&[d, d], q)
}

impl Bijection for Permutation {
    fn dim(&self) -> usize {
        self.perm.len()
    }
    fn cond_dim(&self) -> usize {
        0
    }
    fn forward_and_log_det<'g>(
        &self,
        _s: &Scope<'g>,
        z: Var<'g>,
        _c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        (z.matmul(permutation_matrix(z, &self.perm)), zero_log_det(z))
    }
    fn inverse_and_log_det<'g>(
        &self,
        _s: &Scope<'g>,
        x: Var<'g>,
        _c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        (
            x.matmul(permutation_matrix(x, &self.perm).t()),
            zero_log_det(x),
        )
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![]
    }
    fn describe(&self) -> String {
        format!("Permutation({:?})", self.perm)
    }
}
