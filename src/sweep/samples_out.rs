//! Samples and their importance weights at chosen temperatures, to analyse elsewhere.
//!
//! Drawn from the proposal the estimates use (the flow's defensive mixture q_mix(·|T)), with
//!
//! ```text
//! log w = −U(x)/T − log q_mix(x|T),    weight = w / Σ w   (per temperature)
//! ```
//!
//! so that Σ weight·f(x) estimates ⟨f⟩_T. Columns: `T, x0 … x{d−1}, U, log_w, weight`. A path
//! ending in `.npy` gets one float64 array of shape (rows, d + 4) with the same columns (NumPy
//! format 1.0: `numpy.load`); any other path gets CSV with a header.

use std::path::Path;

use super::{DEFENSIVE_FRACTION, DEFENSIVE_WIDTH};
use crate::error::{input_err, Error, Result};
use crate::estimators::Weights;
use crate::flows::Flow;
use crate::systems::{check_temperature, Energy};

/// Draw `n` samples at each of `temps` and write them with their weights to `path`.
pub fn write_samples(
    flow: &Flow,
    energy: &dyn Energy,
    temps: &[f64],
    n: usize,
    seed: u64,
    path: &Path,
) -> Result<()> {
    if temps.is_empty() || n == 0 {
        return input_err("--samples-out needs at least one temperature and one sample");
    }
    let d = energy.dim();
    let mut rows: Vec<Vec<f64>> = Vec::with_capacity(n * temps.len());
    for (k, &t) in temps.iter().enumerate() {
        check_temperature(t)?;
        let mut rng = crate::rng::stream(seed, "sweep/samples-out", k as u64);
        let s = flow.sample_mixture(n, &[t], DEFENSIVE_WIDTH, DEFENSIVE_FRACTION, &mut rng)?;
        let u = energy.energies(s.x.view())?.to_vec();
        let weight = Weights::boltzmann(&u, &s.log_q, t)?.normalised();
        for (i, x) in s.x.rows().into_iter().enumerate() {
            let mut row = vec![t];
            row.extend(x.iter());
            row.extend([u[i], -u[i] / t - s.log_q[i], weight[i]]);
            rows.push(row);
        }
    }
    let cols: Vec<String> = std::iter::once("T".to_string())
        .chain((0..d).map(|i| format!("x{i}")))
        .chain(["U", "log_w", "weight"].map(String::from))
        .collect();
    let bytes = if path.extension().is_some_and(|e| e == "npy") {
        npy(&rows, cols.len())
    } else {
        let mut w = csv::Writer::from_writer(Vec::new());
        let io = |e: csv::Error| Error::Io(e.to_string());
        w.write_record(&cols).map_err(io)?;
        for r in &rows {
            w.write_record(r.iter().map(|v| v.to_string()))
                .map_err(io)?;
        }
        w.into_inner().map_err(|e| Error::Io(e.to_string()))?
    };
    std::fs::write(path, bytes)
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))
}

/// NumPy format 1.0: magic, header length, a Python dict padded to a 64-byte boundary, then
/// little-endian float64 values in row order.
fn npy(rows: &[Vec<f64>], cols: usize) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({}, {cols}), }}",
        rows.len()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for v in rows.iter().flatten() {
        out.extend(v.to_le_bytes());
    }
    out
}
