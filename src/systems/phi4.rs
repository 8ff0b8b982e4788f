//! `phi4`: lattice φ⁴ theory on an L×L periodic lattice (Albergo, Kanwar, Shanahan 2019):
//!
//! S(φ) = Σ_x [ Σ_{μ=1,2} (φ_{x+μ} − φ_x)² + m² φ_x² + λ φ_x⁴ ]
//!
//! with `L` (8), `m2` (−4), `lambda` (8); p ∝ exp(−S/T), the physical theory at T = 1.
//! Sites are stored row-major: φ[i·L + j]. ∂S/∂φ_x = 2 Σ_μ (2φ_x − φ_{x+μ} − φ_{x−μ}) +
//! 2m² φ_x + 4λ φ_x³.

use super::{count, named, Energy, ParamSpec, Params, SystemInfo};
use crate::error::Result;
use crate::observables::Observable;

const SPECS: &[ParamSpec] = &[
    ParamSpec {
        name: "L",
        default: 8.0,
        doc: "lattice side",
    },
    ParamSpec {
        name: "m2",
        default: -4.0,
        doc: "bare mass squared",
    },
    ParamSpec {
        name: "lambda",
        default: 8.0,
        doc: "quartic coupling",
    },
];

pub(super) const INFO: SystemInfo = SystemInfo {
    name: "phi4",
    doc: "S = Σ_x [Σ_μ (φ_{x+μ} − φ_x)² + m² φ_x² + λ φ_x⁴] on an L×L torus",
    params: SPECS,
};

/// Lattice φ⁴.
#[derive(Clone, Debug)]
pub struct Phi4 {
    /// Lattice side.
    pub l: usize,
    /// m².
    pub m2: f64,
    /// λ.
    pub lambda: f64,
}

impl Phi4 {
    pub(crate) fn from_params(p: &Params) -> Result<Phi4> {
        let v = p.resolve(INFO.name, SPECS, &[])?;
        Ok(Phi4 {
            l: count("L", v[0], 2)?,
            m2: v[1],
            lambda: v[2],
        })
    }
}

impl Energy for Phi4 {
    fn structure(&self) -> super::Structure<'_> {
        super::Structure::Lattice(self)
    }
    fn name(&self) -> &str {
        INFO.name
    }
    fn dim(&self) -> usize {
        self.l * self.l
    }
    fn params(&self) -> Vec<(String, f64)> {
        named(SPECS, &[self.l as f64, self.m2, self.lambda])
    }
    /// `abs_m` = |M|/V and `m2` = M²/V ([`Phi4::observables`]), and `m4` = M⁴/V², so that
    /// the Binder cumulant is `--derive 'binder = 1 - m4/(3*m2^2)'` (1 − ⟨M⁴⟩/3⟨M²⟩²).
    fn observables(&self) -> Vec<Observable> {
        let (a, b, v) = (self.clone(), self.clone(), (self.l * self.l) as f64);
        vec![
            Observable::new("abs_m", move |phi| a.observables(phi)[0]),
            Observable::new("m2", move |phi| b.observables(phi)[1]),
            Observable::new("m4", move |phi| phi.iter().sum::<f64>().powi(4) / (v * v)),
        ]
    }
    fn energy(&self, phi: &[f64]) -> f64 {
        let l = self.l;
        let mut s = 0.0;
        for i in 0..l {
            for j in 0..l {
                let p = phi[i * l + j];
                let right = phi[i * l + (j + 1) % l];
                let down = phi[((i + 1) % l) * l + j];
                s += (right - p).powi(2)
                    + (down - p).powi(2)
                    + self.m2 * p * p
                    + self.lambda * p.powi(4);
            }
        }
        s
    }
    fn energy_grad(&self, phi: &[f64], g: &mut [f64]) -> f64 {
        let l = self.l;
        for i in 0..l {
            for j in 0..l {
                let p = phi[i * l + j];
                let nb = phi[i * l + (j + 1) % l]
                    + phi[i * l + (j + l - 1) % l]
                    + phi[((i + 1) % l) * l + j]
                    + phi[((i + l - 1) % l) * l + j];
                g[i * l + j] =
                    2.0 * (4.0 * p - nb) + 2.0 * self.m2 * p + 4.0 * self.lambda * p.powi(3);
            }
        }
        self.energy(phi)
    }
}

impl Phi4 {
    /// An L×L lattice with couplings m² and λ (L ≥ 2, finite couplings).
    pub fn new(l: usize, m2: f64, lambda: f64) -> Result<Phi4> {
        if l < 2 || !m2.is_finite() || !lambda.is_finite() {
            return crate::error::input_err(format!(
                "phi4 needs L ≥ 2 and finite couplings (got L={l}, m2={m2}, lambda={lambda})"
            ));
        }
        Ok(Phi4 { l, m2, lambda })
    }

    /// Apply a uniformly random symmetry of the action to a configuration in place: a lattice
    /// translation, a transposition, a reflection and the sign flip φ → −φ (the action is
    /// invariant under all of them, so augmented samples stay exact samples).
    pub fn random_symmetry(&self, phi: &mut [f64], rng: &mut impl rand::Rng) {
        let l = self.l;
        let (si, sj) = (rng.random_range(0..l), rng.random_range(0..l));
        let (transpose, reflect) = (rng.random::<bool>(), rng.random::<bool>());
        let sign = if rng.random::<bool>() { -1.0 } else { 1.0 };
        let src = phi.to_vec();
        for i in 0..l {
            for j in 0..l {
                let (mut a, b) = ((i + si) % l, (j + sj) % l);
                if reflect {
                    a = (l - a) % l;
                }
                let k = if transpose { b * l + a } else { a * l + b };
                phi[i * l + j] = sign * src[k];
            }
        }
    }

    /// Observables of one configuration: (|M|/V, M²/V) with M = Σ_x φ_x, V = L². Then
    /// ⟨|M|⟩/V is the absolute magnetisation per site and χ₂ = Σ_x G(x) = ⟨M²⟩/V the
    /// two-point susceptibility (⟨M⟩ = 0 by symmetry on a finite lattice).
    pub fn observables(&self, phi: &[f64]) -> [f64; 2] {
        let v = (self.l * self.l) as f64;
        let m: f64 = phi.iter().sum();
        [m.abs() / v, m * m / v]
    }
}
