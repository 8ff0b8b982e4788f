//! `mixture`: U(x) = −log Σ_i w_i N(x; μ_i, σ² I) in 2-D, with `n_modes` (8) equal-weight
//! modes on a ring of `radius` (4) and width `sigma` (0.5). At T = 1 the Boltzmann density is
//! the mixture itself and Z(1) = 1.

use super::{count, named, positive, Energy, ParamSpec, Params, SystemInfo};
use crate::error::Result;

const SPECS: &[ParamSpec] = &[
    ParamSpec {
        name: "n_modes",
        default: 8.0,
        doc: "number of modes on the ring",
    },
    ParamSpec {
        name: "radius",
        default: 4.0,
        doc: "ring radius",
    },
    ParamSpec {
        name: "sigma",
        default: 0.5,
        doc: "mode width",
    },
];

pub(super) const INFO: SystemInfo = SystemInfo {
    name: "mixture",
    doc: "U = −log Σ w_i N(x; μ_i, σ²I), modes on a ring",
    params: SPECS,
};

/// Gaussian mixture on a ring.
#[derive(Clone, Debug)]
pub struct Mixture {
    centres: Vec<[f64; 2]>,
    radius: f64,
    sigma: f64,
}

impl Mixture {
    /// `n` modes on a ring of radius `r`, width `sigma`.
    pub fn ring(n: usize, r: f64, sigma: f64) -> Mixture {
        let centres = (0..n)
            .map(|i| {
                let a = 2.0 * std::f64::consts::PI * i as f64 / n as f64;
                [r * a.cos(), r * a.sin()]
            })
            .collect();
        Mixture {
            centres,
            radius: r,
            sigma,
        }
    }

    pub(super) fn from_params(p: &Params) -> Result<Mixture> {
        let v = p.resolve(INFO.name, SPECS, &[])?;
        Ok(Mixture::ring(
            count("n_modes", v[0], 1)?,
            v[1],
            positive("sigma", v[2])?,
        ))
    }
}

impl Energy for Mixture {
    fn name(&self) -> &str {
        INFO.name
    }
    fn dim(&self) -> usize {
        2
    }
    fn params(&self) -> Vec<(String, f64)> {
        named(SPECS, &[self.centres.len() as f64, self.radius, self.sigma])
    }
    fn energy(&self, x: &[f64]) -> f64 {
        let mut g = [0.0; 2];
        self.energy_grad(x, &mut g)
    }
    fn energy_grad(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let s2 = self.sigma * self.sigma;
        let n = self.centres.len() as f64;
        let logs: Vec<f64> = self
            .centres
            .iter()
            .map(|m| -((x[0] - m[0]).powi(2) + (x[1] - m[1]).powi(2)) / (2.0 * s2))
            .collect();
        let mx = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let ws: Vec<f64> = logs.iter().map(|l| (l - mx).exp()).collect();
        let tot: f64 = ws.iter().sum();
        // log Σ (1/n) (2πσ²)^{-1} exp(l_i)
        let logp = mx + tot.ln() - n.ln() - (2.0 * std::f64::consts::PI * s2).ln();
        g[0] = 0.0;
        g[1] = 0.0;
        for (w, m) in ws.iter().zip(&self.centres) {
            g[0] += w / tot * (x[0] - m[0]) / s2;
            g[1] += w / tot * (x[1] - m[1]) / s2;
        }
        -logp
    }
    fn bounds(&self) -> Option<Vec<(f64, f64)>> {
        let r = self.radius + 10.0 * self.sigma;
        Some(vec![(-r, r), (-r, r)])
    }
}
