//! `harmonic`: U(x) = ½ xᵀ K x with K symmetric positive definite.
//!
//! Either `K` is given (`K=a,b;c,d`, rows separated by `;`), or K is the chain of `n`
//! particles on a line with springs `k_wall` to both walls and `k_couple` between neighbours:
//! K_ii = (left spring) + (right spring), K_{i,i+1} = K_{i+1,i} = −k_couple, where the end
//! particles' outer spring is k_wall. Defaults n = 2, k_wall = 1, k_couple = 2.
//!
//! Boltzmann: p_T = N(0, T K⁻¹); ⟨U⟩ = dT/2, C_V = d/2, log Z = (d/2) log 2πT − ½ log det K.

use super::{count, named, positive, Energy, ParamSpec, Params, SystemInfo};
use crate::error::{input_err, Result};
use crate::linalg;

const SPECS: &[ParamSpec] = &[
    ParamSpec {
        name: "n",
        default: 2.0,
        doc: "number of particles in the spring chain",
    },
    ParamSpec {
        name: "k_wall",
        default: 1.0,
        doc: "spring constant to each wall",
    },
    ParamSpec {
        name: "k_couple",
        default: 2.0,
        doc: "spring constant between neighbours",
    },
];

pub(super) const INFO: SystemInfo = SystemInfo {
    name: "harmonic",
    doc: "U = ½ xᵀKx: a chain of n particles between two walls (or K=a,b;c,d)",
    params: SPECS,
};

/// A quadratic potential.
#[derive(Clone, Debug)]
pub struct Harmonic {
    k: Vec<f64>,
    n: usize,
    values: Vec<(String, f64)>,
    chol: Vec<f64>,
}

impl Harmonic {
    /// From an explicit symmetric positive-definite K (row-major n×n).
    pub fn from_matrix(k: Vec<f64>, n: usize) -> Result<Harmonic> {
        let chol = linalg::cholesky(&k, n)?;
        let values = std::iter::once(("n".to_string(), n as f64))
            .chain((0..n * n).map(|i| (format!("K_{}{}", i / n, i % n), k[i])))
            .collect();
        Ok(Harmonic { k, n, values, chol })
    }

    /// The spring chain.
    pub fn chain(n: usize, k_wall: f64, k_couple: f64) -> Result<Harmonic> {
        if n == 0 {
            return input_err("harmonic chain needs n ≥ 1");
        }
        // The stiffness matrix, its factor and the covariance factor.
        crate::memory::check(
            &format!("a harmonic chain of {n} springs"),
            24.0 * (n * n) as f64,
        )?;
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            let left = if i == 0 { k_wall } else { k_couple };
            let right = if i + 1 == n { k_wall } else { k_couple };
            k[i * n + i] = left + right;
            if i + 1 < n {
                k[i * n + i + 1] = -k_couple;
                k[(i + 1) * n + i] = -k_couple;
            }
        }
        let mut h = Harmonic::from_matrix(k, n)?;
        h.values = named(SPECS, &[n as f64, k_wall, k_couple]);
        Ok(h)
    }

    pub(super) fn from_params(p: &Params) -> Result<Harmonic> {
        if let Some(kstr) = p.raw("K") {
            if p.raw("n").is_some() || p.raw("k_wall").is_some() || p.raw("k_couple").is_some() {
                return input_err("give either K or the chain parameters n, k_wall, k_couple");
            }
            let rows: Vec<Vec<f64>> = kstr
                .split(';')
                .map(|r| {
                    r.split(',')
                        .map(|v| v.trim().parse::<f64>())
                        .collect::<std::result::Result<_, _>>()
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| {
                    crate::Error::Input(format!("K={kstr:?} is not a matrix like 2,-1;-1,2"))
                })?;
            let n = rows.len();
            if rows.iter().any(|r| r.len() != n) {
                return input_err(format!("K={kstr:?} is not square"));
            }
            return Harmonic::from_matrix(rows.concat(), n);
        }
        let v = p.resolve("harmonic", SPECS, &["K"])?;
        Harmonic::chain(count("n", v[0], 1)?, positive("k_wall", v[1])?, v[2])
    }

    /// The stiffness matrix K (row-major).
    pub fn stiffness(&self) -> &[f64] {
        &self.k
    }

    /// log det K.
    pub fn log_det(&self) -> f64 {
        linalg::log_det_from_cholesky(&self.chol, self.n)
    }

    /// A factor L with L Lᵀ = K⁻¹ (lower-triangular), so x = √T L z samples p_T.
    pub fn cov_factor(&self) -> Vec<f64> {
        // K = C Cᵀ ⇒ K⁻¹ = C⁻ᵀ C⁻¹; take L = C⁻ᵀ reversed to lower form via Cholesky of K⁻¹.
        let ci = linalg::lower_inverse(&self.chol, self.n);
        let n = self.n;
        let mut kinv = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                kinv[i * n + j] = (0..n).map(|k| ci[k * n + i] * ci[k * n + j]).sum();
            }
        }
        linalg::cholesky(&kinv, n).expect("K⁻¹ of an SPD K is SPD")
    }
}

impl Energy for Harmonic {
    fn name(&self) -> &str {
        "harmonic"
    }
    fn dim(&self) -> usize {
        self.n
    }
    fn params(&self) -> Vec<(String, f64)> {
        self.values.clone()
    }
    fn energy(&self, x: &[f64]) -> f64 {
        let mut g = vec![0.0; self.n];
        linalg::mat_vec(&self.k, x, &mut g);
        0.5 * x.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()
    }
    fn energy_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        linalg::mat_vec(&self.k, x, grad);
        0.5 * x.iter().zip(grad.iter()).map(|(a, b)| a * b).sum::<f64>()
    }
    fn as_harmonic(&self) -> Option<&Harmonic> {
        Some(self)
    }
    fn bounds(&self) -> Option<Vec<(f64, f64)>> {
        let n = self.n;
        let l = self.cov_factor();
        Some(
            (0..n)
                .map(|i| {
                    let sd = (0..n).map(|k| l[i * n + k].powi(2)).sum::<f64>().sqrt();
                    (-12.0 * sd, 12.0 * sd)
                })
                .collect(),
        )
    }
}
