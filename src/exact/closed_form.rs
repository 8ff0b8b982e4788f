//! Closed forms for U = ½ xᵀKx in d dimensions:
//! log Z = (d/2) log(2πT) − ½ log det K, ⟨U⟩ = dT/2, C_V = d/2.

use super::Reference;
use crate::error::Result;
use crate::systems::{check_temperature, Energy, Harmonic};

/// Exact thermodynamics of a harmonic system at each temperature.
pub fn harmonic_reference(h: &Harmonic, temps: &[f64]) -> Result<Vec<Reference>> {
    let d = h.dim() as f64;
    temps
        .iter()
        .map(|&t| {
            check_temperature(t)?;
            let log_z = 0.5 * d * (2.0 * std::f64::consts::PI * t).ln() - 0.5 * h.log_det();
            Ok(Reference::new(t, 0.5 * d * t, 0.5 * d, log_z, [0.0; 3]))
        })
        .collect()
}
