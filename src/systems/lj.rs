//! `lj`: a Lennard-Jones cluster of `n` (13) atoms in 3-D, ε = σ = 1, in a weak harmonic trap:
//!
//! U(x) = Σ_{i<j} 4 [r_ij⁻¹² − r_ij⁻⁶] + ½ k_conf Σ_i |x_i|²
//!
//! The trap (`k_conf`, default 0.1) is centred on the origin; since
//! Σ_i |x_i|² = n |x_com|² + Σ_i |x_i − x_com|², it confines the centre of mass and keeps atoms
//! from evaporating, so Z is finite. Coordinates are (x₀, y₀, z₀, x₁, …).

use super::{count, named, Energy, ParamSpec, Params, SystemInfo};
use crate::error::Result;
use crate::observables::{gyration, Observable};

const SPECS: &[ParamSpec] = &[
    ParamSpec {
        name: "n",
        default: 13.0,
        doc: "number of atoms",
    },
    ParamSpec {
        name: "k_conf",
        default: 0.1,
        doc: "harmonic trap about the origin",
    },
];

pub(super) const INFO: SystemInfo = SystemInfo {
    name: "lj",
    doc: "Lennard-Jones cluster, ε = σ = 1, with a weak harmonic trap",
    params: SPECS,
};

/// Lennard-Jones cluster.
#[derive(Clone, Debug)]
pub struct LennardJones {
    /// Atoms.
    pub n: usize,
    /// Trap stiffness.
    pub k_conf: f64,
}

impl LennardJones {
    pub(super) fn from_params(p: &Params) -> Result<LennardJones> {
        let v = p.resolve(INFO.name, SPECS, &[])?;
        Ok(LennardJones {
            n: count("n", v[0], 2)?,
            k_conf: super::positive("k_conf", v[1])?,
        })
    }
}

impl Energy for LennardJones {
    fn structure(&self) -> super::Structure<'_> {
        super::Structure::Cluster(self)
    }
    fn name(&self) -> &str {
        INFO.name
    }
    fn dim(&self) -> usize {
        3 * self.n
    }
    fn params(&self) -> Vec<(String, f64)> {
        named(SPECS, &[self.n as f64, self.k_conf])
    }
    /// `rg2` = R_g² (it grows as the cluster melts).
    fn observables(&self) -> Vec<Observable> {
        vec![Observable::new("rg2", |x| gyration(x, 3))]
    }
    fn energy(&self, x: &[f64]) -> f64 {
        let mut g = vec![0.0; x.len()];
        self.energy_grad(x, &mut g)
    }
    fn energy_grad(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let mut u = 0.0;
        for (gi, xi) in g.iter_mut().zip(x) {
            u += 0.5 * self.k_conf * xi * xi;
            *gi = self.k_conf * xi;
        }
        for i in 0..self.n {
            for j in i + 1..self.n {
                let d = [
                    x[3 * i] - x[3 * j],
                    x[3 * i + 1] - x[3 * j + 1],
                    x[3 * i + 2] - x[3 * j + 2],
                ];
                let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                let inv6 = 1.0 / (r2 * r2 * r2);
                u += 4.0 * (inv6 * inv6 - inv6);
                // dU/dr² = 4(−6 r⁻¹⁴ + 3 r⁻⁸) ; ∂/∂x_i = 2 d · dU/dr²
                let du = 4.0 * (-6.0 * inv6 * inv6 + 3.0 * inv6) / r2;
                for k in 0..3 {
                    g[3 * i + k] += 2.0 * d[k] * du;
                    g[3 * j + k] -= 2.0 * d[k] * du;
                }
            }
        }
        u
    }
}
