//! Internal coordinates of a planar chain of `n` beads (the mixed-coordinate transform of
//! Boltzmann generators, Noé et al. 2019, in 2-D).
//!
//! The flow models the shape of the chain: n − 1 bond lengths l_k and n − 2 turning angles θ_k
//! (the angle between bond k and bond k + 1, 0 for a straight chain), through unbounded
//! variables:
//!
//! ```text
//! l_k = l0 · exp(a y_k),   a = σ_l / l0,  σ_l = 1/√k_bond  (the thermal width at T = 1; l_k > 0)
//! θ_k = 2 atan(y_k)                                       (the half-angle tangent; θ_k ∈ (−π, π))
//! ```
//!
//! The angle map keeps every angle a chain reaches within a few units of y (θ = 2.3, where
//! neighbours' excluded volume begins, is y = 2.2): a map scaled by the bending stiffness's
//! thermal width put those angles at y ≈ 6, beyond the splines' bound, where the flow could not
//! follow them (measured: 3 % of the Boltzmann mass at T = 0.7 missed).
//!
//! The centre of mass R and the direction φ₀ of the first bond are the exact coordinates
//! (u = [y_l, y_θ, R, φ₀]): the bonds point along φ_1 = φ₀, φ_{k+1} = φ_k + θ_k, the beads are
//! r_0 = 0, r_k = r_{k−1} + l_k (cos φ_k, sin φ_k), and x_i = r_i − mean(r) + R. The maps
//! (r_0, b) ↔ (R, b) and (φ_1, …) ↔ (φ₀, θ) have unit determinant and a bond in polar form
//! contributes l_k, so
//!
//! ```text
//! log|det ∂x/∂u| = Σ_k [ln l_k + ln σ_l + a y_k] + Σ_k [ln 2 − ln(1 + y_k²)]
//!                 = Σ_k [ln(l0 σ_l) + 2a y_k] + Σ_k [ln 2 − ln(1 + y_k²)]
//! ```
//!
//! a function of y alone.
//!
//! For a bead-spring chain whose only external potential is a trap ½ k_conf n |R|² on the
//! centre of mass, U is invariant under rotations about R and separates in R: R ~ N(0,
//! T/(k_conf n) I) and φ₀ ~ U(−π, π] exactly, and the flow is left the internal coordinates.

use serde::{Deserialize, Serialize};

use std::f64::consts::PI;

/// Internal coordinates of a planar bead chain (see the module doc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainCoordinates {
    /// Beads.
    pub n: usize,
    /// Bond rest length l0.
    pub l0: f64,
    /// Bond-length scale σ_l at T = 1.
    pub sigma_l: f64,
    /// Stiffness of the trap on the centre of mass (its exact Gaussian).
    pub k_conf: f64,
}

impl ChainCoordinates {
    /// The coordinates of a chain of `n` beads with bond stiffness `k_bond` and rest length
    /// `l0` and a centre-of-mass trap `k_conf`.
    pub fn new(n: usize, l0: f64, k_bond: f64, k_conf: f64) -> ChainCoordinates {
        ChainCoordinates {
            n,
            l0,
            sigma_l: 1.0 / k_bond.sqrt(),
            k_conf,
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if self.n < 2 {
            return Err(format!("a chain needs at least 2 beads, got {}", self.n));
        }
        if !(ok(self.l0) && ok(self.sigma_l) && ok(self.k_conf)) {
            return Err("chain coordinates need positive, finite scales".into());
        }
        Ok(())
    }

    /// Coordinates of the state: 2 n.
    pub fn dim(&self) -> usize {
        2 * self.n
    }
    /// Coordinates the flow models: n − 1 bond lengths and n − 2 turning angles.
    pub fn flow_dim(&self) -> usize {
        2 * self.n - 3
    }
    fn a(&self) -> f64 {
        self.sigma_l / self.l0
    }
    fn com_variance(&self, t: f64) -> f64 {
        t / (self.k_conf * self.n as f64)
    }

    /// Draw the exact coordinates (R, φ₀) at temperature `t` into `e`.
    pub(super) fn sample_exact(&self, t: f64, rng: &mut dyn rand::RngCore, e: &mut [f64]) {
        use rand::Rng;
        let s = self.com_variance(t).sqrt();
        e[0] = s * rng.sample::<f64, _>(rand_distr::StandardNormal);
        e[1] = s * rng.sample::<f64, _>(rand_distr::StandardNormal);
        e[2] = PI * (2.0 * rng.random::<f64>() - 1.0);
    }

    /// log p(R, φ₀ | T).
    pub(super) fn exact_log_prob(&self, e: &[f64], t: f64) -> f64 {
        let v = self.com_variance(t);
        -(e[0] * e[0] + e[1] * e[1]) / (2.0 * v) - (2.0 * PI * v).ln() - (2.0 * PI).ln()
    }

    /// log|det ∂g/∂u| from the flow coordinates y (the first n − 1 are bond lengths).
    fn log_det(&self, y: &[f64]) -> f64 {
        let (yl, yt) = y.split_at(self.n - 1);
        let a = self.a();
        yl.iter()
            .map(|y| (self.l0 * self.sigma_l).ln() + 2.0 * a * y)
            .sum::<f64>()
            + yt.iter()
                .map(|y| std::f64::consts::LN_2 - (y * y).ln_1p())
                .sum::<f64>()
    }

    /// Bond lengths and absolute bond directions from u.
    fn bonds(&self, u: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (n, a) = (self.n, self.a());
        let (yl, rest) = u.split_at(n - 1);
        let yt = &rest[..n - 2];
        let phi0 = u[self.flow_dim() + 2];
        let l: Vec<f64> = yl.iter().map(|y| self.l0 * (a * y).exp()).collect();
        let mut phi = Vec::with_capacity(n - 1);
        phi.push(phi0);
        for (k, y) in yt.iter().enumerate() {
            phi.push(phi[k] + 2.0 * y.atan());
        }
        (l, phi)
    }

    /// x = g(u) and log|det ∂g/∂u|.
    pub fn forward_and_log_det(&self, u: &[f64]) -> (Vec<f64>, f64) {
        let n = self.n;
        let (l, phi) = self.bonds(u);
        let ld = self.log_det(&u[..self.flow_dim()]);
        let mut r = vec![0.0; 2 * n];
        for k in 1..n {
            r[2 * k] = r[2 * k - 2] + l[k - 1] * phi[k - 1].cos();
            r[2 * k + 1] = r[2 * k - 1] + l[k - 1] * phi[k - 1].sin();
        }
        let m = self.flow_dim();
        let shift = [
            u[m] - (0..n).map(|i| r[2 * i]).sum::<f64>() / n as f64,
            u[m + 1] - (0..n).map(|i| r[2 * i + 1]).sum::<f64>() / n as f64,
        ];
        for (i, v) in r.iter_mut().enumerate() {
            *v += shift[i % 2];
        }
        (r, ld)
    }

    /// u = g⁻¹(x) and log|det ∂g⁻¹/∂x|.
    pub fn inverse_and_log_det(&self, x: &[f64]) -> (Vec<f64>, f64) {
        let (n, a) = (self.n, self.a());
        let m = self.flow_dim();
        let mut u = vec![0.0; self.dim()];
        let mut phi = Vec::with_capacity(n - 1);
        for k in 1..n {
            let (dx, dy) = (x[2 * k] - x[2 * k - 2], x[2 * k + 1] - x[2 * k - 1]);
            let l = dx.hypot(dy);
            u[k - 1] = (l / self.l0).ln() / a;
            phi.push(dy.atan2(dx));
        }
        for k in 0..n - 2 {
            let mut th = phi[k + 1] - phi[k];
            if th > PI {
                th -= 2.0 * PI;
            } else if th <= -PI {
                th += 2.0 * PI;
            }
            u[n - 1 + k] = (0.5 * th).tan();
        }
        u[m] = (0..n).map(|i| x[2 * i]).sum::<f64>() / n as f64;
        u[m + 1] = (0..n).map(|i| x[2 * i + 1]).sum::<f64>() / n as f64;
        u[m + 2] = phi[0];
        let ld = self.log_det(&u[..m]);
        (u, -ld)
    }

    /// ∂/∂y of ⟨g_x, x(u)⟩ (the flow coordinates' part of Jᵀ g_x) and of log|det ∂g/∂u|,
    /// at u, by one reverse pass over the chain.
    pub fn pull_back(&self, u: &[f64], g_x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (n, a) = (self.n, self.a());
        let (l, phi) = self.bonds(u);
        let mean = [
            (0..n).map(|i| g_x[2 * i]).sum::<f64>() / n as f64,
            (0..n).map(|i| g_x[2 * i + 1]).sum::<f64>() / n as f64,
        ];
        // ∂/∂b_k = Σ_{i ≥ k} (g_i − mean g); then polar form, then φ_k = φ₀ + Σ_{j<k} θ_j.
        let (mut acc, mut g_l, mut g_phi) = ([0.0; 2], vec![0.0; n - 1], vec![0.0; n - 1]);
        for k in (1..n).rev() {
            acc[0] += g_x[2 * k] - mean[0];
            acc[1] += g_x[2 * k + 1] - mean[1];
            let (s, co) = phi[k - 1].sin_cos();
            g_l[k - 1] = acc[0] * co + acc[1] * s;
            g_phi[k - 1] = l[k - 1] * (-acc[0] * s + acc[1] * co);
        }
        let mut g_y = vec![0.0; self.flow_dim()];
        let mut g_ld = vec![0.0; self.flow_dim()];
        for k in 0..n - 1 {
            g_y[k] = g_l[k] * a * l[k];
            g_ld[k] = 2.0 * a;
        }
        let mut tail = 0.0;
        for j in (0..n - 2).rev() {
            tail += g_phi[j + 1];
            let y = u[n - 1 + j];
            let q = 1.0 + y * y;
            g_y[n - 1 + j] = tail * 2.0 / q;
            g_ld[n - 1 + j] = -2.0 * y / q;
        }
        (g_y, g_ld)
    }
}
