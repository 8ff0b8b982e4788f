//! Exact thermodynamic references: closed forms for `harmonic`, numerical quadrature for
//! every 1-D and 2-D system, the character expansion for 2-D U(1) gauge theory ([`u1`]) and for
//! the XY model on the 2 × 2 torus ([`xy`]).
//!
//! For each temperature T: log Z = log ∫ e^{−U/T} dx, ⟨U⟩, C_V = (⟨U²⟩ − ⟨U⟩²)/T²,
//! F = −T log Z, S = (⟨U⟩ − F)/T, each with an error estimate (0 for closed forms).

mod closed_form;
mod quadrature;
pub mod u1;
pub mod xy;

pub use closed_form::harmonic_reference;
pub use quadrature::{quadrature, quadrature_expectation, quadrature_expectations};
pub use u1::{u1_exact, U1Exact};
pub use xy::xy_exact;

use serde::Serialize;

/// Exact values at one temperature.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Reference {
    /// Temperature.
    pub t: f64,
    /// ⟨U⟩.
    pub u: f64,
    /// C_V.
    pub cv: f64,
    /// log Z.
    pub log_z: f64,
    /// F = −T log Z.
    pub f: f64,
    /// S = (⟨U⟩ − F)/T.
    pub s: f64,
    /// Error estimate of ⟨U⟩.
    pub u_err: f64,
    /// Error estimate of C_V.
    pub cv_err: f64,
    /// Error estimate of log Z.
    pub log_z_err: f64,
}

impl Reference {
    pub(crate) fn new(t: f64, u: f64, cv: f64, log_z: f64, errs: [f64; 3]) -> Reference {
        let f = -t * log_z;
        Reference {
            t,
            u,
            cv,
            log_z,
            f,
            s: (u - f) / t,
            u_err: errs[0],
            cv_err: errs[1],
            log_z_err: errs[2],
        }
    }
}

/// The exact reference for a system, if one exists: closed form for `harmonic`, quadrature
/// for 1-D and 2-D systems, the character expansion for `u1` and for `xy` at L = 2, `None`
/// otherwise.
pub fn reference(
    e: &dyn crate::systems::Energy,
    temps: &[f64],
) -> crate::Result<Option<Vec<Reference>>> {
    if let Some(h) = e.as_harmonic() {
        return Ok(Some(harmonic_reference(h, temps)?));
    }
    if let crate::systems::Structure::Gauge(g) = e.structure() {
        let at = |t: f64| -> crate::Result<Reference> {
            let x = u1_exact(g.l, 1.0 / t)?;
            // Summed to rounding: the expansion's own error is far below 1e-12.
            Ok(Reference::new(t, x.u, x.cv, x.log_z, [0.0; 3]))
        };
        return Ok(Some(
            temps.iter().map(|&t| at(t)).collect::<crate::Result<_>>()?,
        ));
    }
    if let crate::systems::Structure::Spins(xy) = e.structure() {
        return temps.iter().map(|&t| xy_exact(xy, t)).collect();
    }
    if e.dim() <= 2 {
        return Ok(Some(quadrature(e, temps)?));
    }
    Ok(None)
}

/// The exact heat capacity's maximum inside [lo, hi], (T*, C_V(T*)), by golden-section search
/// (to 10⁻⁷ of the interval; one maximum there is assumed), or `None` without an exact
/// reference or where the search ends at an end of the interval (no maximum inside).
pub fn cv_maximum(
    e: &dyn crate::systems::Energy,
    lo: f64,
    hi: f64,
) -> crate::Result<Option<(f64, f64)>> {
    let cv = |t: f64| -> crate::Result<Option<f64>> { Ok(reference(e, &[t])?.map(|r| r[0].cv)) };
    if cv(lo)?.is_none() {
        return Ok(None);
    }
    let g = 0.5 * (5f64.sqrt() - 1.0);
    let (mut a, mut b) = (lo, hi);
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (cv(c)?.unwrap_or(f64::NAN), cv(d)?.unwrap_or(f64::NAN));
    while b - a > 1e-7 * (hi - lo) {
        if fc > fd {
            (b, d, fd) = (d, c, fc);
            c = b - g * (b - a);
            fc = cv(c)?.unwrap_or(f64::NAN);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + g * (b - a);
            fd = cv(d)?.unwrap_or(f64::NAN);
        }
    }
    let t = 0.5 * (a + b);
    if (t - lo).min(hi - t) < 1e-6 * (hi - lo) {
        return Ok(None);
    }
    Ok(cv(t)?.map(|v| (t, v)))
}
