//! Linear flow x = L z + μ with L lower-triangular, positive diagonal via exp.
//!
//! Parameters: `l` (d×d; strictly lower part = L's off-diagonal, diagonal = log L_ii) and
//! `shift` = μ. log|det J| = Σ_i log L_ii. The inverse is exact and differentiable in the
//! graph: with L = (I + A) D, D = diag(L), A = N D⁻¹ strictly lower (nilpotent),
//! L⁻¹ = D⁻¹ Σ_{k<d} (−A)^k, summed by Horner's rule. Zero parameters: L = I, μ = 0.

use serde::{Deserialize, Serialize};

use super::params::{ParamSet, Scope};
use super::Bijection;
use crate::engine::{Dim, Var};

/// Lower-triangular affine map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearFlow {
    dim: usize,
    /// `l` and `shift`.
    pub params: ParamSet,
}

impl LinearFlow {
    /// The identity map on `dim` coordinates.
    pub fn new(dim: usize) -> LinearFlow {
        let mut params = ParamSet::default();
        params.push("l", &[dim, dim], vec![0.0; dim * dim]);
        params.push("shift", &[dim], vec![0.0; dim]);
        LinearFlow { dim, params }
    }

    /// A fresh layer of this one's dimension, once the stored parameter count matches it.
    pub(crate) fn template(&self) -> crate::Result<LinearFlow> {
        let d = self.dim;
        let declared = d.checked_mul(d).and_then(|n| n.checked_add(d));
        super::params::check_count(declared, &[&self.params])?;
        Ok(LinearFlow::new(d))
    }
    /// The matrix L (row-major) for the current parameters.
    pub fn matrix(&self) -> Vec<f64> {
        let d = self.dim;
        let l = &self.params.get("l").values;
        (0..d * d)
            .map(|k| {
                let (i, j) = (k / d, k % d);
                match i.cmp(&j) {
                    std::cmp::Ordering::Greater => l[k],
                    std::cmp::Ordering::Equal => l[k].exp(),
                    std::cmp::Ordering::Less => 0.0,
                }
            })
            .collect()
    }
}

/// Fixed d×d masks: identity, strictly lower, strictly upper.
pub(crate) fn masks<'g>(v: Var<'g>, d: usize) -> (Var<'g>, Var<'g>, Var<'g>) {
    let g = v.builder();
    let mk = |f: &dyn Fn(usize, usize) -> bool| {
        g.constant_tensor(
            &[d, d],
            (0..d * d)
                .map(|k| if f(k / d, k % d) { 1.0 } else { 0.0 })
                .collect(),
        )
    };
    (mk(&|i, j| i == j), mk(&|i, j| i > j), mk(&|i, j| i < j))
}

/// (I + A)⁻¹ for nilpotent A (d×d): Σ_{k<d} (−A)^k by Horner's rule.
pub(crate) fn unipotent_inverse<'g>(a: Var<'g>, eye: Var<'g>, d: usize) -> Var<'g> {
    let mut m = eye;
    for _ in 1..d {
        m = eye - a.matmul(m);
    }
    m
}

impl Bijection for LinearFlow {
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
        let (l, mu) = (s.param(&self.params, "l"), s.param(&self.params, "shift"));
        let (eye, lower, _) = masks(l, d);
        let diag = l * eye;
        let lmat = l * lower + eye * diag.exp();
        let x = z.matmul(lmat.t()) + mu;
        (x, diag.sum_all().expand(0, Dim::Batch))
    }
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        _c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let d = self.dim;
        let (l, mu) = (s.param(&self.params, "l"), s.param(&self.params, "shift"));
        let (eye, lower, _) = masks(l, d);
        let diag = l * eye;
        let dinv = eye * diag.neg().exp();
        let a = (l * lower).matmul(dinv);
        let linv = dinv.matmul(unipotent_inverse(a, eye, d));
        let z = (x - mu).matmul(linv.t());
        (z, diag.sum_all().neg().expand(0, Dim::Batch))
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![(String::new(), &self.params)]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![(String::new(), &mut self.params)]
    }
    fn describe(&self) -> String {
        format!("LinearFlow(dim={})", self.dim)
    }
}
