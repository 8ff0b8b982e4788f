//! The exact reference of the XY model ([`crate::systems::Xy`]) on the 2 × 2 torus. There every
//! bond appears twice (x + 0̂ and x − 0̂ are one site), so the four spins form a ring
//! 00 – 01 – 11 – 10 – 00 with coupling K = 2J/T, whose character expansion is the U(1)
//! plaquette sum at V = 4 ([`super::u1`]: Σ_n I_n(K)^4, the same e^{K cos φ} on each of four
//! relative angles around a closed loop):
//!
//! ```text
//! Z = (2π)^4 Σ_n I_n(K)^4,   ⟨U⟩ = 2J ⟨E⟩_{U(1), L=2}(β = K),   C_V = C_V,U(1)(β = K),
//! log Z = log Z_{U(1), L=2}(β = K) − 4 log 2π
//! ```
//!
//! (U = −2J Σ_ring cos, so −∂_β log Z = 2J · (−∂_K log Σ_n I_n(K)^4) and β² Var U = K² Var E;
//! the U(1) log Z counts 2V = 8 links' Lebesgue measure, the ring 4 spins'). Larger lattices
//! have no exact finite-volume solution.

use std::f64::consts::PI;

use super::{u1_exact, Reference};
use crate::error::Result;
use crate::systems::Xy;

/// The exact reference at temperature `t` where one exists (L = 2), else None.
pub fn xy_exact(xy: &Xy, t: f64) -> Result<Option<Reference>> {
    crate::systems::check_temperature(t)?;
    if xy.l != 2 {
        return Ok(None);
    }
    let x = u1_exact(2, 2.0 * xy.j / t)?;
    let log_z = x.log_z - 4.0 * (2.0 * PI).ln();
    Ok(Some(Reference::new(
        t,
        2.0 * xy.j * x.u,
        x.cv,
        log_z,
        [0.0; 3],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systems::Energy;

    /// The ring's character expansion against direct integration over the 2 × 2 torus (one spin
    /// fixed by rotation invariance, a periodic grid on the other three: spectrally accurate),
    /// and None for larger lattices.
    #[test]
    fn the_two_by_two_torus_matches_direct_integration() {
        let n = 48;
        let h = 2.0 * PI / n as f64;
        for (j, t) in [(1.0, 0.5), (1.0, 1.0), (0.7, 2.0)] {
            let xy = Xy::new(2, j).unwrap();
            let (mut z, mut zu, mut zuu) = (0.0, 0.0, 0.0);
            for a in 0..n {
                for b in 0..n {
                    for c in 0..n {
                        let theta = [0.0, a as f64 * h, b as f64 * h, c as f64 * h];
                        let u = xy.energy(&theta);
                        let w = (-u / t).exp();
                        z += w;
                        zu += w * u;
                        zuu += w * u * u;
                    }
                }
            }
            let (mean, sq) = (zu / z, zuu / z);
            let log_z = (z * h.powi(3) * 2.0 * PI).ln();
            let cv = (sq - mean * mean) / (t * t);
            let r = xy_exact(&xy, t).unwrap().unwrap();
            assert!(
                (r.log_z - log_z).abs() < 1e-9,
                "J={j} T={t}: log Z {} vs {log_z}",
                r.log_z
            );
            assert!(
                (r.u - mean).abs() < 1e-9,
                "J={j} T={t}: U {} vs {mean}",
                r.u
            );
            assert!(
                (r.cv - cv).abs() < 1e-8,
                "J={j} T={t}: C_V {} vs {cv}",
                r.cv
            );
        }
        assert!(xy_exact(&Xy::new(4, 1.0).unwrap(), 1.0).unwrap().is_none());
        assert!(xy_exact(&Xy::new(2, 1.0).unwrap(), 0.0).is_err());
    }
}
