//! Memory estimates, checked before work starts: a size that cannot fit is an error naming the
//! estimate, not an abort half-way through a run.

use crate::error::{input_err, Result};

/// Bytes of memory available now (`MemAvailable` on Linux), if the system says.
pub fn available() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Fail when `what` needs about `bytes` and the machine has less available (or, where the
/// system does not say, more than 1 TiB).
pub fn check(what: &str, bytes: f64) -> Result<()> {
    let limit = available().unwrap_or(1024f64.powi(4));
    if bytes.is_finite() && bytes <= limit {
        return Ok(());
    }
    let gib = |b: f64| b / 1024f64.powi(3);
    input_err(format!(
        "{what} needs about {:.3e} GiB of memory; {:.1} GiB are available",
        gib(bytes),
        gib(limit)
    ))
}

/// Bytes that `rows` samples of dimension `dim` take where they are drawn and kept (states in
/// f32 and f64, their energies, log-densities and weights), with a margin.
pub fn sample_rows(rows: usize, dim: usize) -> f64 {
    rows as f64 * (dim as f64 * 32.0 + 256.0)
}
