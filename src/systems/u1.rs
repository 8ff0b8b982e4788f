//! `u1`: compact U(1) lattice gauge theory in two dimensions (Wilson action), the source
//! article's lattice-gauge model (Kanwar et al. 2020):
//!
//! ```text
//! E(θ) = −Σ_P cos θ_P,   θ_P(x) = θ_0(x) + θ_1(x + 0̂) − θ_0(x + 1̂) − θ_1(x),
//! p(θ | T) ∝ e^{−E/T}   (β = 1/T),
//! Q = (1/2π) Σ_P wrap(θ_P),   wrap(φ) ∈ [−π, π)   (an integer on the torus)
//! ```
//!
//! on an L × L periodic lattice: link angles θ_μ(x), μ = 0 along a row (x + 0̂ is the next
//! column), μ = 1 down a column, stored θ[μ·L² + i·L + j] for site x = (i, j); one plaquette
//! per site. ∂E/∂θ_0(x) = sin θ_P(x) − sin θ_P(x − 1̂), ∂E/∂θ_1(x) = sin θ_P(x − 0̂) −
//! sin θ_P(x). A gauge transformation θ_μ(x) → θ_μ(x) + α(x) − α(x + μ̂) leaves every θ_P,
//! and so E and Q, unchanged.
//!
//! The angles are coordinates on a circle: E is periodic in each, so p is not normalisable on
//! ℝ^{2L²} and the coupling flows for real coordinates do not apply ([`super::flows_apply`]);
//! the gauge-equivariant flow on the circle ([`crate::flows::GaugeCoupling`],
//! [`crate::gauge`]) does, through `thermoflow mcmc --sampler flow`; HMC and local Metropolis
//! move the angles as they are. Exact finite-L references: [`crate::exact::u1`].

use std::f64::consts::PI;

use crate::error::{input_err, Result};
use crate::observables::Observable;

use super::{count, named, Energy, ParamSpec, Params, SystemInfo};

const SPECS: &[ParamSpec] = &[ParamSpec {
    name: "L",
    default: 8.0,
    doc: "lattice side",
}];

pub(super) const INFO: SystemInfo = SystemInfo {
    name: "u1",
    doc: "E = −Σ_P cos θ_P, U(1) gauge links on an L×L torus (mcmc: flow, hmc, rwm)",
    params: SPECS,
};

/// U(1) gauge links on an L × L torus.
#[derive(Clone, Debug)]
pub struct U1 {
    /// Lattice side.
    pub l: usize,
}

/// An angle wrapped into [−π, π).
pub fn wrap(phi: f64) -> f64 {
    phi - 2.0 * PI * ((phi + PI) / (2.0 * PI)).floor()
}

impl U1 {
    /// An L × L lattice (L ≥ 2).
    pub fn new(l: usize) -> Result<U1> {
        if !(2..=1024).contains(&l) {
            return input_err(format!("u1 needs 2 ≤ L ≤ 1024, got L = {l}"));
        }
        Ok(U1 { l })
    }

    pub(crate) fn from_params(p: &Params) -> Result<U1> {
        let v = p.resolve(INFO.name, SPECS, &[])?;
        U1::new(count("L", v[0], 2)?)
    }

    /// Plaquettes (sites) V = L².
    pub fn volume(&self) -> usize {
        self.l * self.l
    }

    fn link(&self, mu: usize, i: usize, j: usize) -> usize {
        mu * self.volume() + (i % self.l) * self.l + j % self.l
    }

    /// θ_P at every site (not wrapped).
    pub fn plaquettes(&self, theta: &[f64]) -> Vec<f64> {
        let l = self.l;
        let mut p = Vec::with_capacity(l * l);
        for i in 0..l {
            for j in 0..l {
                p.push(
                    theta[self.link(0, i, j)] + theta[self.link(1, i, j + 1)]
                        - theta[self.link(0, i + 1, j)]
                        - theta[self.link(1, i, j)],
                );
            }
        }
        p
    }

    /// ⟨cos θ_P⟩ over the lattice.
    pub fn mean_plaquette(&self, theta: &[f64]) -> f64 {
        let p = self.plaquettes(theta);
        p.iter().map(|v| v.cos()).sum::<f64>() / p.len() as f64
    }

    /// The topological charge Q = (1/2π) Σ_P wrap(θ_P) (an integer up to rounding).
    pub fn charge(&self, theta: &[f64]) -> f64 {
        self.plaquettes(theta).iter().map(|&v| wrap(v)).sum::<f64>() / (2.0 * PI)
    }

    /// Apply the gauge transformation with site angles `alpha` (row-major, L² of them):
    /// θ_μ(x) += α(x) − α(x + μ̂).
    pub fn gauge_transform(&self, theta: &mut [f64], alpha: &[f64]) {
        let l = self.l;
        for i in 0..l {
            for j in 0..l {
                let a = alpha[i * l + j];
                theta[self.link(0, i, j)] += a - alpha[i * l + (j + 1) % l];
                theta[self.link(1, i, j)] += a - alpha[((i + 1) % l) * l + j];
            }
        }
    }
}

impl Energy for U1 {
    fn name(&self) -> &str {
        INFO.name
    }
    fn structure(&self) -> super::Structure<'_> {
        super::Structure::Gauge(self)
    }
    fn dim(&self) -> usize {
        2 * self.volume()
    }
    fn params(&self) -> Vec<(String, f64)> {
        named(SPECS, &[self.l as f64])
    }
    /// `plaquette` = the mean ⟨cos θ_P⟩ over the lattice, `q2` = Q², each with its exact
    /// average from the character expansion ([`crate::exact::u1_exact`]).
    fn observables(&self) -> Vec<Observable> {
        let (a, b, l) = (self.clone(), self.clone(), self.l);
        let exact = move |t: f64| crate::exact::u1_exact(l, 1.0 / t);
        vec![
            Observable::new("plaquette", move |t| a.mean_plaquette(t))
                .with_exact(move |t| Ok(exact(t)?.plaquette)),
            Observable::new("q2", move |t| b.charge(t).powi(2))
                .with_exact(move |t| Ok(exact(t)?.q2)),
        ]
    }
    fn energy(&self, theta: &[f64]) -> f64 {
        -self.plaquettes(theta).iter().map(|v| v.cos()).sum::<f64>()
    }
    fn energy_grad(&self, theta: &[f64], g: &mut [f64]) -> f64 {
        let l = self.l;
        let p = self.plaquettes(theta);
        let s = |i: usize, j: usize| p[(i % l) * l + j % l].sin();
        for i in 0..l {
            for j in 0..l {
                g[self.link(0, i, j)] = s(i, j) - s(i + l - 1, j);
                g[self.link(1, i, j)] = s(i, j + l - 1) - s(i, j);
            }
        }
        -p.iter().map(|v| v.cos()).sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn random_links(u: &U1, seed: u64) -> Vec<f64> {
        let mut rng = crate::rng::seeded(seed);
        (0..u.dim()).map(|_| rng.random_range(-4.0..4.0)).collect()
    }

    /// The analytic gradient against central differences; E, the plaquettes and Q unchanged
    /// by a random gauge transformation, and Q an integer.
    #[test]
    fn gradient_gauge_invariance_and_integer_charge() {
        for l in [2usize, 3, 5] {
            let u = U1::new(l).unwrap();
            let theta = random_links(&u, l as u64);
            let mut g = vec![0.0; u.dim()];
            let e = u.energy_grad(&theta, &mut g);
            assert!((e - u.energy(&theta)).abs() < 1e-12);
            for k in 0..u.dim() {
                let h = 1e-6;
                let mut t = theta.clone();
                t[k] += h;
                let up = u.energy(&t);
                t[k] -= 2.0 * h;
                let fd = (up - u.energy(&t)) / (2.0 * h);
                assert!((g[k] - fd).abs() < 1e-7, "L={l} link {k}: {} vs {fd}", g[k]);
            }
            let q = u.charge(&theta);
            assert!((q - q.round()).abs() < 1e-9, "Q = {q}");
            let mut rng = crate::rng::seeded(99);
            let alpha: Vec<f64> = (0..u.volume()).map(|_| rng.random_range(-PI..PI)).collect();
            let mut moved = theta.clone();
            u.gauge_transform(&mut moved, &alpha);
            assert!(moved.iter().zip(&theta).any(|(a, b)| (a - b).abs() > 0.1));
            assert!((u.energy(&moved) - e).abs() < 1e-9);
            assert!((u.charge(&moved) - q).abs() < 1e-9);
        }
        assert!(U1::new(1).is_err());
        assert_eq!(wrap(PI), -PI);
        assert!((wrap(7.0) - (7.0 - 2.0 * PI)).abs() < 1e-15);
    }
}
