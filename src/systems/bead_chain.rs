//! `bead-chain`: a 2-D bead-spring chain of `n` (8) beads:
//!
//! U = Σ_i ½ k_bond (|r_{i+1} − r_i| − l0)² + Σ_i k_bend (1 − cos θ_i)
//!   + Σ_{|i−j|>1} WCA(r_ij) + ½ k_conf n |r_com|²
//!
//! θ_i is the angle between consecutive bonds (0 for a straight chain), WCA is the purely
//! repulsive Lennard-Jones 4ε[(σ/r)¹² − (σ/r)⁶] + ε for r < 2^{1/6}σ (ε = 1, σ = `sigma`), and
//! the weak trap on the centre of mass (`k_conf`) makes Z finite. Defaults: k_bond = 100,
//! l0 = 1, k_bend = 2, sigma = 0.8, k_conf = 0.1. Coordinates (x₀, y₀, x₁, y₁, …).

use super::{count, named, positive, Energy, ParamSpec, Params, SystemInfo};
use crate::error::Result;
use crate::observables::{gyration, Observable};

const SPECS: &[ParamSpec] = &[
    ParamSpec {
        name: "n",
        default: 8.0,
        doc: "number of beads",
    },
    ParamSpec {
        name: "k_bond",
        default: 100.0,
        doc: "bond spring constant",
    },
    ParamSpec {
        name: "l0",
        default: 1.0,
        doc: "bond rest length",
    },
    ParamSpec {
        name: "k_bend",
        default: 2.0,
        doc: "bending stiffness",
    },
    ParamSpec {
        name: "sigma",
        default: 0.8,
        doc: "excluded-volume diameter",
    },
    ParamSpec {
        name: "k_conf",
        default: 0.1,
        doc: "trap on the centre of mass",
    },
];

pub(super) const INFO: SystemInfo = SystemInfo {
    name: "bead-chain",
    doc: "2-D bead-spring chain: bonds + bending + excluded volume",
    params: SPECS,
};

/// Bead-spring chain in the plane.
#[derive(Clone, Debug)]
pub struct BeadChain {
    /// Beads.
    pub n: usize,
    /// Bond stiffness.
    pub k_bond: f64,
    /// Rest length.
    pub l0: f64,
    /// Bending stiffness.
    pub k_bend: f64,
    /// WCA diameter.
    pub sigma: f64,
    /// Centre-of-mass trap.
    pub k_conf: f64,
}

impl BeadChain {
    pub(crate) fn from_params(p: &Params) -> Result<BeadChain> {
        let v = p.resolve(INFO.name, SPECS, &[])?;
        Ok(BeadChain {
            n: count("n", v[0], 2)?,
            k_bond: positive("k_bond", v[1])?,
            l0: positive("l0", v[2])?,
            k_bend: v[3],
            sigma: positive("sigma", v[4])?,
            k_conf: positive("k_conf", v[5])?,
        })
    }
}

impl Default for BeadChain {
    fn default() -> Self {
        BeadChain {
            n: 8,
            k_bond: 100.0,
            l0: 1.0,
            k_bend: 2.0,
            sigma: 0.8,
            k_conf: 0.1,
        }
    }
}

impl Energy for BeadChain {
    fn structure(&self) -> super::Structure<'_> {
        super::Structure::Chain(self)
    }
    fn name(&self) -> &str {
        INFO.name
    }
    fn dim(&self) -> usize {
        2 * self.n
    }
    fn params(&self) -> Vec<(String, f64)> {
        named(
            SPECS,
            &[
                self.n as f64,
                self.k_bond,
                self.l0,
                self.k_bend,
                self.sigma,
                self.k_conf,
            ],
        )
    }
    /// `rg2` = R_g², `end2` = |r_{n−1} − r_0|².
    fn observables(&self) -> Vec<Observable> {
        let n = self.n;
        vec![
            Observable::new("rg2", |x| gyration(x, 2)),
            Observable::new("end2", move |x| {
                (x[2 * n - 2] - x[0]).powi(2) + (x[2 * n - 1] - x[1]).powi(2)
            }),
        ]
    }
    fn energy(&self, x: &[f64]) -> f64 {
        let mut g = vec![0.0; x.len()];
        self.energy_grad(x, &mut g)
    }
    fn energy_grad(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let n = self.n;
        g.iter_mut().for_each(|v| *v = 0.0);
        let p = |i: usize| [x[2 * i], x[2 * i + 1]];
        let mut u = 0.0;
        // Bonds.
        for i in 0..n - 1 {
            let (a, b) = (p(i), p(i + 1));
            let d = [b[0] - a[0], b[1] - a[1]];
            let r = (d[0] * d[0] + d[1] * d[1]).sqrt().max(1e-12);
            let s = r - self.l0;
            u += 0.5 * self.k_bond * s * s;
            let f = self.k_bond * s / r;
            for k in 0..2 {
                g[2 * (i + 1) + k] += f * d[k];
                g[2 * i + k] -= f * d[k];
            }
        }
        // Bending: k (1 − cos θ), cos θ = (b1·b2)/(|b1||b2|).
        for i in 1..n.saturating_sub(1) {
            let (a, b, c) = (p(i - 1), p(i), p(i + 1));
            let b1 = [b[0] - a[0], b[1] - a[1]];
            let b2 = [c[0] - b[0], c[1] - b[1]];
            let (n1, n2) = (
                (b1[0] * b1[0] + b1[1] * b1[1]).sqrt().max(1e-12),
                (b2[0] * b2[0] + b2[1] * b2[1]).sqrt().max(1e-12),
            );
            let dot = b1[0] * b2[0] + b1[1] * b2[1];
            let cos = dot / (n1 * n2);
            u += self.k_bend * (1.0 - cos);
            // ∂cos/∂b1 = b2/(n1 n2) − cos b1/n1², ∂cos/∂b2 = b1/(n1 n2) − cos b2/n2².
            for k in 0..2 {
                let dc1 = b2[k] / (n1 * n2) - cos * b1[k] / (n1 * n1);
                let dc2 = b1[k] / (n1 * n2) - cos * b2[k] / (n2 * n2);
                // b1 = b − a, b2 = c − b; dU = −k dcos.
                g[2 * (i - 1) + k] += self.k_bend * dc1;
                g[2 * i + k] += self.k_bend * (dc2 - dc1);
                g[2 * (i + 1) + k] -= self.k_bend * dc2;
            }
        }
        // Excluded volume (WCA) between non-bonded beads.
        let rc2 = 2f64.powf(1.0 / 3.0) * self.sigma * self.sigma;
        for i in 0..n {
            for j in i + 2..n {
                let (a, b) = (p(i), p(j));
                let d = [a[0] - b[0], a[1] - b[1]];
                let r2 = d[0] * d[0] + d[1] * d[1];
                if r2 < rc2 {
                    let s6 = (self.sigma * self.sigma / r2).powi(3);
                    u += 4.0 * (s6 * s6 - s6) + 1.0;
                    let du = 4.0 * (-6.0 * s6 * s6 + 3.0 * s6) / r2;
                    for k in 0..2 {
                        g[2 * i + k] += 2.0 * d[k] * du;
                        g[2 * j + k] -= 2.0 * d[k] * du;
                    }
                }
            }
        }
        // Centre-of-mass trap: ½ k n |com|², ∂/∂x_i = k com.
        let mut com = [0.0; 2];
        for i in 0..n {
            com[0] += x[2 * i] / n as f64;
            com[1] += x[2 * i + 1] / n as f64;
        }
        u += 0.5 * self.k_conf * n as f64 * (com[0] * com[0] + com[1] * com[1]);
        for i in 0..n {
            g[2 * i] += self.k_conf * com[0];
            g[2 * i + 1] += self.k_conf * com[1];
        }
        u
    }
}
