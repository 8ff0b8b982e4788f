//! C_V = d⟨U⟩/dT across a temperature grid by finite differences.
//!
//! Interior points use the central difference (U_{i+1} − U_{i−1})/(T_{i+1} − T_{i−1}), the
//! ends one-sided differences; with independent estimates at each temperature the standard
//! error is √(se²_a + se²_b)/(T_a − T_b). The difference itself has an O(ΔT²) (interior) or
//! O(ΔT) (ends) discretisation bias that the error bar does not include.

use super::Estimate;
use crate::error::{input_err, Result};

/// d⟨U⟩/dT on the grid `temps` (strictly increasing, at least two points).
pub fn cv_from_derivative(temps: &[f64], u: &[Estimate]) -> Result<Vec<Estimate>> {
    let n = temps.len();
    if n < 2 || u.len() != n {
        return input_err("need at least two temperatures, one ⟨U⟩ each");
    }
    if temps.windows(2).any(|w| w[1] <= w[0]) {
        return input_err("temperatures must be strictly increasing");
    }
    Ok((0..n)
        .map(|i| {
            let (a, b) = (i.saturating_sub(1), (i + 1).min(n - 1));
            let dt = temps[b] - temps[a];
            Estimate {
                value: (u[b].value - u[a].value) / dt,
                se: (u[a].se.powi(2) + u[b].se.powi(2)).sqrt() / dt,
            }
        })
        .collect())
}
