//! Centre-of-mass-free coordinates of a cluster of `n` identical atoms in 3-D.
//!
//! Per axis, the positions are the centre of mass R plus n − 1 orthonormal modes orthogonal to
//! it (the Helmert basis h_k, k = 1 … n − 1: 1/√(k(k+1)) on atoms 0 … k − 1, −k/√(k(k+1)) on
//! atom k):
//!
//! ```text
//! x_i = R + Σ_k h_k[i] y_k,       log|det ∂x/∂(y, R)| = (3/2) ln n
//! ```
//!
//! (the columns [1, h_1, …] are orthogonal, the first of norm √n). With a trap
//! ½ k_conf Σ_i |x_i|² = ½ k_conf (n |R|² + Σ_k |y_k|²) about the origin and pair interactions,
//! U separates in R: R ~ N(0, T/(k_conf n) I) exactly, and the flow models the 3(n − 1) modes.
//! The atoms keep their labels: the flow covers the permutation copies its training reaches,
//! which leaves ⟨U⟩ and C_V exact (they are symmetric) and log Z short by the log of the
//! copies missed.

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// Centre-of-mass-free coordinates of a 3-D cluster (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterCoordinates {
    /// Atoms.
    pub n: usize,
    /// Stiffness of the trap about the origin (the centre of mass's exact Gaussian).
    pub k_conf: f64,
}

impl ClusterCoordinates {
    pub(super) fn check(&self) -> Result<(), String> {
        if self.n < 2 {
            return Err(format!("a cluster needs at least 2 atoms, got {}", self.n));
        }
        if !(self.k_conf.is_finite() && self.k_conf > 0.0) {
            return Err("cluster coordinates need a positive trap".into());
        }
        Ok(())
    }
    /// Coordinates of the state: 3 n.
    pub fn dim(&self) -> usize {
        3 * self.n
    }
    /// Coordinates the flow models: 3 (n − 1).
    pub fn flow_dim(&self) -> usize {
        3 * (self.n - 1)
    }
    fn com_variance(&self, t: f64) -> f64 {
        t / (self.k_conf * self.n as f64)
    }
    /// h_k[i] for k = 1 … n − 1.
    fn h(k: usize, i: usize) -> f64 {
        let s = 1.0 / ((k * (k + 1)) as f64).sqrt();
        match i.cmp(&k) {
            std::cmp::Ordering::Less => s,
            std::cmp::Ordering::Equal => -(k as f64) * s,
            std::cmp::Ordering::Greater => 0.0,
        }
    }
    fn log_det(&self) -> f64 {
        1.5 * (self.n as f64).ln()
    }

    pub(super) fn sample_exact(&self, t: f64, rng: &mut dyn rand::RngCore, e: &mut [f64]) {
        use rand::Rng;
        let s = self.com_variance(t).sqrt();
        for v in e.iter_mut() {
            *v = s * rng.sample::<f64, _>(rand_distr::StandardNormal);
        }
    }

    pub(super) fn exact_log_prob(&self, e: &[f64], t: f64) -> f64 {
        let v = self.com_variance(t);
        -e.iter().map(|r| r * r).sum::<f64>() / (2.0 * v) - 1.5 * (2.0 * PI * v).ln()
    }

    /// x = g(u) and log|det ∂g/∂u|, u = [y_1, …, y_{n−1}, R] (3 values each).
    pub fn forward_and_log_det(&self, u: &[f64]) -> (Vec<f64>, f64) {
        let (n, m) = (self.n, self.flow_dim());
        let mut x = vec![0.0; self.dim()];
        for i in 0..n {
            for a in 0..3 {
                x[3 * i + a] = u[m + a]
                    + (1.max(i)..n)
                        .map(|k| Self::h(k, i) * u[3 * (k - 1) + a])
                        .sum::<f64>();
            }
        }
        (x, self.log_det())
    }

    /// u = g⁻¹(x) and log|det ∂g⁻¹/∂x|.
    pub fn inverse_and_log_det(&self, x: &[f64]) -> (Vec<f64>, f64) {
        let (n, m) = (self.n, self.flow_dim());
        let mut u = vec![0.0; self.dim()];
        for a in 0..3 {
            for k in 1..n {
                u[3 * (k - 1) + a] = (0..=k).map(|i| Self::h(k, i) * x[3 * i + a]).sum();
            }
            u[m + a] = (0..n).map(|i| x[3 * i + a]).sum::<f64>() / n as f64;
        }
        (u, -self.log_det())
    }

    /// ∂/∂y of ⟨g_x, x(u)⟩ and of log|det ∂g/∂u| (zero: the map is linear).
    pub fn pull_back(&self, _u: &[f64], g_x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut g = vec![0.0; self.flow_dim()];
        for k in 1..self.n {
            for a in 0..3 {
                g[3 * (k - 1) + a] = (0..=k).map(|i| Self::h(k, i) * g_x[3 * i + a]).sum();
            }
        }
        (g, vec![0.0; self.flow_dim()])
    }
}
