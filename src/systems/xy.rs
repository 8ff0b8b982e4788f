//! `xy`: the classical XY model (planar rotors, O(2) spins) on an L × L torus, the lattice model
//! of the Berezinskii–Kosterlitz–Thouless transition (T_BKT ≈ 0.893 J in infinite volume):
//!
//! ```text
//! U(θ) = −J Σ_x [cos(θ_x − θ_{x+0̂}) + cos(θ_x − θ_{x+1̂})],   p(θ | T) ∝ e^{−U/T},
//! M = Σ_x (cos θ_x, sin θ_x),   abs_m = |M|/V,   m2 = |M|²/V   (V = L²)
//! ```
//!
//! and the helicity modulus (spin stiffness) Υ, the free energy's curvature under a twist φ of
//! every bond in direction μ, U_φ = −J Σ_x cos(θ_x − θ_{x+μ̂} − φ):
//!
//! ```text
//! Υ = (1/V) ∂²F/∂φ² |_{φ=0} = (1/2V) Σ_μ [⟨E_μ⟩ − ⟨I_μ²⟩/T],
//! E_μ = J Σ_x cos(θ_x − θ_{x+μ̂}),   I_μ = J Σ_x sin(θ_x − θ_{x+μ̂})   (⟨I_μ⟩ = 0 by θ → −θ)
//! ```
//!
//! (averaged over both directions), which jumps from 2T/π to 0 at T_BKT in infinite volume: the
//! observable `helicity`, the mean of (1/2V) Σ_μ (E_μ − I_μ²/T) at each T.
//!
//! Spins θ_x are stored row-major, θ[i·L + j] for site x = (i, j); x + 0̂ is the next column,
//! x + 1̂ the next row (periodic). ∂U/∂θ_x = J Σ_{y ~ x} sin(θ_x − θ_y), over the four
//! neighbours. A global rotation θ_x → θ_x + α leaves U (and |M|) unchanged.
//!
//! The angles are coordinates on a circle: U is periodic in each, so p is not normalisable on
//! ℝ^V and the coupling flows for real coordinates do not apply ([`super::flows_apply`]); the
//! checkerboard flow of circular splines does ([`crate::flows::SpinCoupling`]). On the 2 × 2
//! torus every bond appears twice and the spins form a ring of four with coupling 2J, which the
//! character expansion solves exactly ([`crate::exact::xy_exact`]).

use crate::error::{input_err, Result};
use crate::observables::Observable;

use super::{count, named, Energy, ParamSpec, Params, SystemInfo};

const SPECS: &[ParamSpec] = &[
    ParamSpec {
        name: "L",
        default: 8.0,
        doc: "lattice side (even)",
    },
    ParamSpec {
        name: "J",
        default: 1.0,
        doc: "coupling (> 0: ferromagnetic)",
    },
];

pub(super) const INFO: SystemInfo = SystemInfo {
    name: "xy",
    doc: "U = −J Σ_⟨xy⟩ cos(θ_x − θ_y), planar spins on an L×L torus (BKT transition)",
    params: SPECS,
};

/// XY spins on an L × L torus.
#[derive(Clone, Debug)]
pub struct Xy {
    /// Lattice side.
    pub l: usize,
    /// Coupling J.
    pub j: f64,
}

impl Xy {
    /// An L × L lattice with coupling J > 0 (L even, so that the flow's checkerboard does not
    /// touch itself across the boundary).
    pub fn new(l: usize, j: f64) -> Result<Xy> {
        if !(2..=1024).contains(&l) || !l.is_multiple_of(2) {
            return input_err(format!("xy needs an even L with 2 ≤ L ≤ 1024, got L = {l}"));
        }
        if !(j.is_finite() && j > 0.0) {
            return input_err(format!(
                "xy needs a finite coupling J > 0 (a ferromagnet), got J = {j}"
            ));
        }
        Ok(Xy { l, j })
    }

    pub(crate) fn from_params(p: &Params) -> Result<Xy> {
        let v = p.resolve(INFO.name, SPECS, &[])?;
        Xy::new(count("L", v[0], 2)?, v[1])
    }

    /// Sites V = L².
    pub fn volume(&self) -> usize {
        self.l * self.l
    }

    /// The right (x + 0̂) and lower (x + 1̂) neighbours of site k.
    fn neighbours(&self, k: usize) -> [usize; 2] {
        let (l, i, j) = (self.l, k / self.l, k % self.l);
        [i * l + (j + 1) % l, ((i + 1) % l) * l + j]
    }

    /// The helicity modulus's estimator at temperature `t`, (1/2V) Σ_μ (E_μ − I_μ²/T): its
    /// Boltzmann average is Υ (module docs).
    pub fn helicity(&self, theta: &[f64], t: f64) -> f64 {
        let (mut e, mut i) = ([0.0; 2], [0.0; 2]);
        for (k, &a) in theta.iter().enumerate() {
            for (mu, n) in self.neighbours(k).into_iter().enumerate() {
                let d = a - theta[n];
                e[mu] += d.cos();
                i[mu] += d.sin();
            }
        }
        let j = self.j;
        let sum: f64 = (0..2).map(|mu| j * e[mu] - (j * i[mu]).powi(2) / t).sum();
        sum / (2.0 * self.volume() as f64)
    }

    /// The magnetisation M = Σ_x (cos θ_x, sin θ_x).
    pub fn magnetisation(&self, theta: &[f64]) -> (f64, f64) {
        theta
            .iter()
            .fold((0.0, 0.0), |(c, s), t| (c + t.cos(), s + t.sin()))
    }
}

impl Energy for Xy {
    fn name(&self) -> &str {
        INFO.name
    }
    fn structure(&self) -> super::Structure<'_> {
        super::Structure::Spins(self)
    }
    fn dim(&self) -> usize {
        self.volume()
    }
    fn params(&self) -> Vec<(String, f64)> {
        named(SPECS, &[self.l as f64, self.j])
    }
    /// `abs_m` = |M|/V, `m2` = |M|²/V (the susceptibility's χ = m2/T above T_BKT, where
    /// ⟨M⟩ = 0 by symmetry), `m4` = |M|⁴/V² (the Binder cumulant of planar spins is
    /// `--derive 'binder = 1 - m4/(2*m2^2)'`), `helicity` = Υ (exact on the 2 × 2 torus, where I_μ = 0: every
    /// bond is there twice, once each way, so Υ = −⟨U⟩/2V).
    fn observables(&self) -> Vec<Observable> {
        let (a, b, h, q) = (self.clone(), self.clone(), self.clone(), self.clone());
        let v = self.volume() as f64;
        let mut helicity = Observable::at_temperature("helicity", move |x, t| h.helicity(x, t));
        if self.l == 2 {
            let xy = self.clone();
            helicity = helicity.with_exact(move |t| {
                let r = crate::exact::xy_exact(&xy, t)?;
                Ok(r.map_or(f64::NAN, |r| -r.u / (2.0 * v)))
            });
        }
        vec![
            Observable::new("abs_m", move |t| {
                let (c, s) = a.magnetisation(t);
                c.hypot(s) / v
            }),
            Observable::new("m2", move |t| {
                let (c, s) = b.magnetisation(t);
                (c * c + s * s) / v
            }),
            Observable::new("m4", move |t| {
                let (c, s) = q.magnetisation(t);
                (c * c + s * s).powi(2) / (v * v)
            }),
            helicity,
        ]
    }
    fn energy(&self, theta: &[f64]) -> f64 {
        let mut u = 0.0;
        for (k, &t) in theta.iter().enumerate() {
            for n in self.neighbours(k) {
                u -= (t - theta[n]).cos();
            }
        }
        self.j * u
    }
    fn energy_grad(&self, theta: &[f64], g: &mut [f64]) -> f64 {
        g.iter_mut().for_each(|v| *v = 0.0);
        let mut u = 0.0;
        for (k, &t) in theta.iter().enumerate() {
            for n in self.neighbours(k) {
                let d = t - theta[n];
                u -= d.cos();
                let s = self.j * d.sin();
                g[k] += s;
                g[n] -= s;
            }
        }
        self.j * u
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// The analytic gradient against central differences; U and |M| unchanged by a global
    /// rotation; bad sizes and couplings refused.
    #[test]
    fn gradient_and_rotation_invariance() {
        for (l, j) in [(2usize, 1.0), (4, 0.7), (6, 1.3)] {
            let xy = Xy::new(l, j).unwrap();
            let mut rng = crate::rng::seeded(l as u64);
            let theta: Vec<f64> = (0..xy.dim()).map(|_| rng.random_range(-4.0..4.0)).collect();
            let mut g = vec![0.0; xy.dim()];
            let u = xy.energy_grad(&theta, &mut g);
            assert!((u - xy.energy(&theta)).abs() < 1e-12);
            for k in 0..xy.dim() {
                let h = 1e-6;
                let mut t = theta.clone();
                t[k] += h;
                let up = xy.energy(&t);
                t[k] -= 2.0 * h;
                let fd = (up - xy.energy(&t)) / (2.0 * h);
                assert!((g[k] - fd).abs() < 1e-7, "L={l} site {k}: {} vs {fd}", g[k]);
            }
            let turned: Vec<f64> = theta.iter().map(|t| t + 1.234).collect();
            assert!((xy.energy(&turned) - u).abs() < 1e-9);
            let (m, n) = (xy.magnetisation(&theta), xy.magnetisation(&turned));
            assert!((m.0.hypot(m.1) - n.0.hypot(n.1)).abs() < 1e-9);
            // The ordered state has U = −2 J V, |M|/V = 1, |M|²/V = V, |M|⁴/V² = V².
            let ordered = vec![0.3; xy.dim()];
            let v = xy.volume() as f64;
            assert!((xy.energy(&ordered) + 2.0 * j * v).abs() < 1e-9);
            let obs: Vec<f64> = xy.observables()[..3]
                .iter()
                .map(|o| o.eval(&ordered, 1.0))
                .collect();
            for (got, want) in obs.iter().zip([1.0, v, v * v]) {
                assert!((got / want - 1.0).abs() < 1e-12, "{obs:?}");
            }
        }
        assert!(Xy::new(3, 1.0).is_err());
        assert!(Xy::new(0, 1.0).is_err());
        assert!(Xy::new(4, 0.0).is_err());
        assert!(Xy::new(4, f64::NAN).is_err());
    }

    /// The helicity estimator is the curvature of the free energy under a twist: on a set of
    /// configurations closed under θ → −θ (so that its mean I_μ is 0) and under transposing the
    /// lattice (both directions weigh the same), its mean equals (1/V) d²F/dφ² at φ = 0 for the
    /// set's own F(φ) = −T log mean e^{−(U_φ − U)/T}, φ twisting every bond in direction 0
    /// (central differences). The ordered state has Υ = J, and on the 2 × 2 torus, where every
    /// bond is there twice, once each way, Υ's estimator is −U/2V.
    #[test]
    fn helicity_is_the_curvature_under_a_twist() {
        for (l, j, t) in [(4usize, 1.0, 0.8), (6, 0.7, 1.5)] {
            let xy = Xy::new(l, j).unwrap();
            let v = xy.volume();
            let mut rng = crate::rng::seeded(l as u64);
            let mut set = Vec::new();
            for _ in 0..20 {
                let th: Vec<f64> = (0..v).map(|_| rng.random_range(-1.0..1.0)).collect();
                let tr: Vec<f64> = (0..v).map(|k| th[(k % l) * l + k / l]).collect();
                for c in [th, tr] {
                    set.push(c.iter().map(|a| -a).collect::<Vec<f64>>());
                    set.push(c);
                }
            }
            let twisted = |th: &[f64], phi: f64| -> f64 {
                let bonds = (0..v).map(|k| {
                    let [r, d] = xy.neighbours(k);
                    (th[k] - th[r] - phi).cos() + (th[k] - th[d]).cos()
                });
                -j * bonds.sum::<f64>()
            };
            let f = |phi: f64| {
                let z = (set.iter())
                    .map(|th| (-(twisted(th, phi) - twisted(th, 0.0)) / t).exp())
                    .sum::<f64>();
                -t * (z / set.len() as f64).ln()
            };
            let h = 1e-3;
            let curvature = (f(h) - 2.0 * f(0.0) + f(-h)) / (h * h) / v as f64;
            let mean = set.iter().map(|th| xy.helicity(th, t)).sum::<f64>() / set.len() as f64;
            assert!(
                (curvature - mean).abs() < 1e-6,
                "L = {l}: curvature {curvature} vs mean estimator {mean}"
            );
            assert!(mean > 0.1, "{mean}");
            assert!((xy.helicity(&vec![0.4; v], t) - j).abs() < 1e-12);
        }
        let xy = Xy::new(2, 1.3).unwrap();
        let th = [0.3, -1.2, 2.0, 0.7];
        assert!((xy.helicity(&th, 0.9) + xy.energy(&th) / 8.0).abs() < 1e-12);
    }
}
