//! Radial flow (Rezende & Mohamed 2015) with closed-form determinant and inverse.
//!
//! ```text
//! f(z) = z + β h(r) (z − z₀),   r = |z − z₀|,   h = 1/(α + r)
//! log|det J| = (d − 1) log(1 + βh) + log(1 + βh − β r h²)      (matrix determinant lemma)
//! ```
//!
//! α = softplus(α̃) > 0, β = −α + softplus(β̃) ≥ −α (invertible); all-zero parameters give
//! β = 0, the identity. Inverse: ρ = |x − z₀| = r (1 + β/(α + r)) is the quadratic
//! r² + (α + β − ρ) r − αρ = 0 with the root r ≥ 0; then z = z₀ + (x − z₀)/(1 + βh(r)).
//! Norms use √(|·|² + ε²), ε = 10⁻¹⁰, so gradients stay finite at z = z₀.
//! Conditioned, (z₀, α̃, β̃) = base + MLP(c) with the MLP's last layer zero at start.

use serde::{Deserialize, Serialize};

use super::mlp::{Activation, Mlp};
use super::params::{ParamSet, Scope};
use super::Bijection;
use crate::engine::{Dim, Var};

const EPS2: f64 = 1e-20;

/// A radial contraction/expansion around a centre.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Radial {
    dim: usize,
    cond_dim: usize,
    /// Base parameters `[z0 (d), α̃, β̃]`.
    pub params: ParamSet,
    /// Condition head (present when `cond_dim > 0`).
    pub head: Option<Mlp>,
}

impl Radial {
    /// A radial layer; `seed` initialises the centre (small random) and the head.
    pub fn new(dim: usize, cond_dim: usize, width: usize, seed: u64) -> Radial {
        let mut params = ParamSet::default();
        params.push("base", &[dim + 2], vec![0.0; dim + 2]);
        let head =
            (cond_dim > 0).then(|| Mlp::new(cond_dim, width, 1, dim + 2, Activation::Tanh, seed));
        Radial {
            dim,
            cond_dim,
            params,
            head,
        }
    }

    /// A fresh layer with this one's architecture, once it is checked.
    pub(crate) fn template(&self) -> crate::Result<Radial> {
        let (d, c) = (self.dim, self.cond_dim);
        super::params::check_count(d.checked_add(2), &[&self.params])?;
        let head = match &self.head {
            None if c == 0 => None,
            Some(h) if c > 0 && h.sizes.first() == Some(&c) && h.sizes.last() == Some(&(d + 2)) => {
                Some(h.template()?)
            }
            _ => {
                return crate::error::input_err(format!(
                    "its condition head does not fit {c} condition features and dim {d}"
                ))
            }
        };
        let mut params = ParamSet::default();
        params.push("base", &[d + 2], vec![0.0; d + 2]);
        Ok(Radial {
            dim: d,
            cond_dim: c,
            params,
            head,
        })
    }

    /// (z₀ `[b,d]`, α `[b]`, β `[b]`).
    fn coefficients<'g>(&self, s: &Scope<'g>, c: Option<Var<'g>>) -> (Var<'g>, Var<'g>, Var<'g>) {
        let base = s.param(&self.params, "base");
        let p = match (&self.head, c) {
            (Some(h), Some(c)) => h.apply(&s.child("head"), Some(c)) + base,
            _ => base.expand(0, Dim::Batch),
        };
        let d = self.dim;
        let z0 = p.slice(1, 0, d);
        let alpha = p.slice(1, d, d + 1).sum(1).softplus();
        let beta = p.slice(1, d + 1, d + 2).sum(1).softplus() - alpha;
        (z0, alpha, beta)
    }

    fn log_det<'g>(&self, r: Var<'g>, alpha: Var<'g>, beta: Var<'g>) -> Var<'g> {
        let h = (alpha + r).recip();
        let bh = beta * h;
        let a = bh.add_scalar(1.0);
        (a.ln() * (self.dim as f64 - 1.0)) + (a - bh * h * r).ln()
    }
}

fn norm<'g>(v: Var<'g>) -> Var<'g> {
    v.square().sum(1).add_scalar(EPS2).sqrt()
}

impl Bijection for Radial {
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
        let (z0, alpha, beta) = self.coefficients(s, c);
        let diff = z - z0;
        let r = norm(diff);
        let bh = beta / (alpha + r);
        let x = z + diff * bh.expand(1, Dim::Fixed(self.dim));
        (x, self.log_det(r, alpha, beta))
    }
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (z0, alpha, beta) = self.coefficients(s, c);
        let diff = x - z0;
        let rho = norm(diff);
        let q = alpha + beta - rho;
        let r = (q.neg() + (q * q + alpha * rho * 4.0).sqrt()) * 0.5;
        let factor = (beta / (alpha + r)).add_scalar(1.0);
        let z = z0 + diff / factor.expand(1, Dim::Fixed(self.dim));
        (z, self.log_det(r, alpha, beta).neg())
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        let mut v = vec![(String::new(), &self.params)];
        if let Some(h) = &self.head {
            v.push(("head".into(), &h.params));
        }
        v
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        let mut v = vec![(String::new(), &mut self.params)];
        if let Some(h) = &mut self.head {
            v.push(("head".into(), &mut h.params));
        }
        v
    }
    fn describe(&self) -> String {
        format!("Radial(dim={}, cond={})", self.dim, self.cond_dim)
    }
}
