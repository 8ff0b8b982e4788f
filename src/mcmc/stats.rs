//! Time-series statistics for Markov chains.
//!
//! **τ_int** (Sokal's automatic windowing): with the autocorrelation ρ(t) averaged over
//! chains, τ_int(W) = ½ + Σ_{t=1}^{W} ρ(t), and W is the smallest window with W ≥ c·τ_int(W)
//! (c = 5). The effective number of samples of a chain of length n is n / (2 τ_int).
//!
//! **Batch means**: each chain is cut into B consecutive batches; a statistic is computed on
//! every batch and its standard error is sd(batch values)/√(number of batches). With batches
//! much longer than τ_int the batch values are nearly independent.
//!
//! **Burn-in by MSER** (White 1997, the marginal standard error rule): of a series x_0 … x_{n−1}
//! that starts away from its stationary level, discard the first d with d minimising
//!
//! ```text
//! MSER(d) = Σ_{t ≥ d} (x_t − x̄_d)² / (n − d)²,   x̄_d the mean of x_d … x_{n−1},
//! ```
//!
//! the squared standard error the rest would have if it were uncorrelated: discarding more
//! removes bias until it only removes samples.

use crate::estimators::Estimate;

/// Chain length, in units of the slowest observable's τ_int, that batch-means errors need: below
/// it a chain has not forgotten its start and averages over too few independent stretches
/// (the `mcmc` report warns; flow-MCMC with `max_steps` runs on).
pub const MIN_CHAIN_TAUS: f64 = 20.0;

/// Integrated autocorrelation time of one observable from several chains.
pub fn tau_int(chains: &[Vec<f64>]) -> f64 {
    let n = chains.iter().map(|c| c.len()).min().unwrap_or(0);
    if n < 4 {
        return f64::NAN;
    }
    let total: f64 = chains.iter().map(|c| c[..n].iter().sum::<f64>()).sum();
    let mean = total / (n * chains.len()) as f64;
    let cov = |t: usize| -> f64 {
        let mut s = 0.0;
        for c in chains {
            for i in 0..n - t {
                s += (c[i] - mean) * (c[i + t] - mean);
            }
        }
        s / ((n - t) * chains.len()) as f64
    };
    let c0 = cov(0);
    if c0 <= 0.0 {
        return 0.5;
    }
    let mut tau = 0.5;
    for w in 1..n / 2 {
        tau += cov(w) / c0;
        if w as f64 >= 5.0 * tau {
            return tau.max(0.5);
        }
    }
    tau.max(0.5)
}

/// Where chains (`series[k][chain]`, every observable equally long) are shorter than
/// [`MIN_CHAIN_TAUS`] times the slowest observable's τ_int and `max_steps` allows, the length to
/// run them on to (twice theirs, at most `max_steps`) and why; `None` where they are long
/// enough or at the cap.
pub fn run_on(series: &[Vec<Vec<f64>>], max_steps: Option<usize>) -> Option<(usize, String)> {
    let len = series.first().and_then(|s| s.first()).map_or(0, Vec::len);
    let most = max_steps.filter(|&m| m > len)?;
    let slowest = series.iter().map(|s| tau_int(s)).fold(0.5, f64::max);
    if len as f64 >= MIN_CHAIN_TAUS * slowest {
        return None;
    }
    let next = (2 * len).max(1).min(most);
    let why = format!(
        "the chains are {:.1} τ_int long (τ_int = {slowest:.0} steps): running on to {next} steps (at most {most})",
        len as f64 / slowest
    );
    Some((next, why))
}

/// Batch-means estimate of `stat` over chains cut into `n_batches` batches each. The value is
/// `stat` on all samples pooled.
pub fn batch_means(
    chains: &[Vec<f64>],
    n_batches: usize,
    stat: impl Fn(&[f64]) -> f64,
) -> Estimate {
    let pooled: Vec<f64> = chains.iter().flatten().copied().collect();
    let value = stat(&pooled);
    let mut vals = Vec::new();
    for c in chains {
        let len = c.len() / n_batches.max(1);
        if len == 0 {
            continue;
        }
        for b in 0..n_batches {
            vals.push(stat(&c[b * len..(b + 1) * len]));
        }
    }
    let k = vals.len() as f64;
    if k < 2.0 {
        return Estimate {
            value,
            se: f64::NAN,
        };
    }
    let m = vals.iter().sum::<f64>() / k;
    let var = vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (k - 1.0);
    Estimate {
        value,
        se: (var / k).sqrt(),
    }
}

/// The burn-in d ∈ [`lo`, `hi`] (`hi` at most n − 2) that minimises MSER(d) (see the module
/// docs); `lo` where that range is empty. A non-finite value cuts the series after it (d
/// beyond it, beyond `hi` if need be).
pub fn mser(x: &[f64], lo: usize, hi: usize) -> usize {
    let n = x.len();
    let hi = hi.min(n.saturating_sub(2));
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let (mut best, mut best_d) = (f64::INFINITY, lo.min(n));
    for d in (lo..n).rev() {
        if !x[d].is_finite() {
            return if best.is_finite() { best_d } else { d + 1 };
        }
        s1 += x[d];
        s2 += x[d] * x[d];
        let m = (n - d) as f64;
        let v = (s2 - s1 * s1 / m).max(0.0) / (m * m);
        if d <= hi && v <= best {
            (best, best_d) = (v, d);
        }
    }
    best_d
}

/// |t| of the paired differences a_r − b_r across independent replicas (0 when they all
/// vanish, ∞ when their spread is not finite).
pub fn paired_t(a: &[f64], b: &[f64]) -> f64 {
    let r = a.len() as f64;
    let diff: Vec<f64> = a.iter().zip(b).map(|(a, b)| a - b).collect();
    let mean = diff.iter().sum::<f64>() / r;
    let sd = (diff.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (r - 1.0)).sqrt();
    if mean == 0.0 {
        return 0.0;
    }
    let t = mean.abs() / (sd / r.sqrt());
    if t.is_nan() {
        f64::INFINITY
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// MSER cuts an exponential transient where it has sunk into the noise (x_t = 5 e^{−t/20}
    /// plus noise of sd 0.1; the transient is below 0.1 from t ≈ 78), and discards little from a
    /// stationary series beyond `lo`; a non-finite value is cut off. Over seeds 0–199: d
    /// 60–95 for the transient, at most 14 for the stationary series (lo = 10).
    #[test]
    fn mser_cuts_a_transient_and_keeps_a_stationary_series() {
        let mut rng = crate::rng::seeded(11);
        let mut noise = || rng.random_range(-0.17..0.17);
        let x: Vec<f64> = (0..1000)
            .map(|t| 5.0 * (-(t as f64) / 20.0).exp() + noise())
            .collect();
        let d = mser(&x, 0, 500);
        assert!((50..=160).contains(&d), "d = {d}");
        let flat: Vec<f64> = (0..1000).map(|_| noise()).collect();
        assert!(mser(&flat, 10, 500) <= 30, "{}", mser(&flat, 10, 500));
        let mut y = flat.clone();
        y[300] = f64::NAN;
        assert!(mser(&y, 10, 200) > 300);
    }

    /// An AR(1) chain x_{t+1} = a x_t + noise has τ_int = ½ (1 + a)/(1 − a).
    #[test]
    fn tau_int_of_ar1_matches_theory() {
        let a = 0.8;
        let mut rng = crate::rng::seeded(3);
        let chains: Vec<Vec<f64>> = (0..8)
            .map(|_| {
                let mut x = 0.0;
                (0..50_000)
                    .map(|_| {
                        x = a * x + rng.random_range(-1.0..1.0);
                        x
                    })
                    .collect()
            })
            .collect();
        let tau = tau_int(&chains);
        let want = 0.5 * (1.0 + a) / (1.0 - a);
        assert!((tau - want).abs() < 0.08 * want, "tau {tau} vs {want}");
        let m = batch_means(&chains, 20, |c| c.iter().sum::<f64>() / c.len() as f64);
        assert!(m.value.abs() < 4.0 * m.se, "{m:?}");
    }
}
