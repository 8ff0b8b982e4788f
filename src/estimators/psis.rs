//! Pareto-smoothed importance sampling (Vehtari, Simpson, Gelman, Yao, Gabry, JMLR 2024).
//!
//! For S weights take the M = ⌈min(S/5, 3√S)⌉ largest, and fit a generalised Pareto
//! distribution (GPD) to their exceedances y = w − u over the (M+1)-th largest weight u with
//! the Zhang & Stephens (2009) profile-likelihood estimator:
//!
//! ```text
//! θ_j = 1/y_max + (1 − √(m/(j − ½))) / (3 y_(⌊M/4+½⌋)),   j = 1…m,  m = 30 + ⌊√M⌋
//! k(θ) = mean_i log(1 − θ y_i),   ℓ(θ) = M (log(−θ/k(θ)) − k(θ) − 1)
//! θ̂ = Σ_j θ_j / Σ_l exp(ℓ(θ_l) − ℓ(θ_j)),   k̂ = mean_i log(1 − θ̂ y_i),  σ̂ = −k̂/θ̂
//! k̂ ← (M k̂ + 10 · ½)/(M + 10)                       (weak prior towards ½)
//! ```
//!
//! Reading k̂: below ½ the weights have finite variance, so a raw (unsmoothed) importance
//! sampling estimate obeys the central limit theorem and its error bar means what it says;
//! between ½ and 0.7 only a *smoothed* estimate converges at a usable rate, and it is biased.
//! The sweep estimates with raw weights (see `estimators`), so its threshold is
//! [`k_threshold`]`(S)` = min(1 − 1/log₁₀ S, ½) (the first term for the fit's reliability at
//! small S); above it, an importance-sampled error bar is not to be trusted. Smoothing
//! ([`smooth`], kept for users who accept its bias) replaces the M
//! largest weights by the fitted distribution's expected order statistics
//! u + F⁻¹((z − ½)/M), z = 1…M, capped at the largest raw weight. k̂ only sees drawn samples:
//! it cannot find a basin the proposal never visits.

/// Threshold on k̂ for raw-weight estimates from S samples: min(1 − 1/log₁₀ S, ½).
pub fn k_threshold(s: usize) -> f64 {
    (1.0 - 1.0 / (s.max(2) as f64).log10()).min(0.5)
}

/// Size of the tail fitted for S samples: ⌈min(S/5, 3√S)⌉.
fn tail_len(s: usize) -> usize {
    (s as f64 / 5.0).min(3.0 * (s as f64).sqrt()).ceil() as usize
}

/// GPD fit to exceedances `y` (sorted ascending, non-negative, largest > 0): (k̂, σ̂), k̂
/// before the prior.
fn gpd_fit(y: &[f64]) -> (f64, f64) {
    let n = y.len();
    let m = 30 + (n as f64).sqrt() as usize;
    // The quartile sets the grid's scale; ties at the cut-off fall back to the smallest gap.
    let smallest = y
        .iter()
        .copied()
        .find(|v| *v > 0.0)
        .unwrap_or(f64::MIN_POSITIVE);
    let quart = y[((n as f64 / 4.0 + 0.5) as usize).clamp(1, n) - 1].max(smallest);
    let y_max = y[n - 1];
    let k_of = |th: f64| y.iter().map(|v| (-th * v).ln_1p()).sum::<f64>() / n as f64;
    let thetas: Vec<f64> = (1..=m)
        .map(|j| 1.0 / y_max + (1.0 - (m as f64 / (j as f64 - 0.5)).sqrt()) / (3.0 * quart))
        .collect();
    let lik: Vec<f64> = thetas
        .iter()
        .map(|&th| {
            let k = k_of(th);
            n as f64 * ((-th / k).ln() - k - 1.0)
        })
        .collect();
    // Posterior mean of θ with weights ∝ exp(ℓ), ignoring negligible or undefined ones.
    let lmax = lik
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let (mut num, mut den) = (0.0, 0.0);
    for (th, l) in thetas.iter().zip(&lik) {
        if l.is_finite() {
            let w = (l - lmax).exp();
            num += w * th;
            den += w;
        }
    }
    if den == 0.0 {
        return (f64::INFINITY, f64::NAN);
    }
    let th = num / den;
    let k = k_of(th);
    (k, -k / th)
}

/// Quantile of the GPD with shape k and scale σ at probability p.
fn gpd_quantile(p: f64, k: f64, sigma: f64) -> f64 {
    if k.abs() < f64::EPSILON {
        -sigma * (-p).ln_1p()
    } else {
        sigma * ((-k * (-p).ln_1p()).exp_m1()) / k
    }
}

/// The fitted tail of `values` (non-negative): indices of the M largest sorted ascending,
/// the cut-off u, and the fit (k̂ with the prior, σ̂). `None` when there are too few samples
/// to fit (M ≤ 4). k̂ is −∞ when the tail is flat (all M values within 10⁻⁹ of u, relatively).
fn fit_tail(values: &[f64]) -> Option<(Vec<usize>, f64, f64, f64)> {
    let s = values.len();
    let m = tail_len(s);
    if m <= 4 || m >= s {
        return None;
    }
    let mut idx: Vec<usize> = (0..s).collect();
    idx.select_nth_unstable_by(s - m - 1, |a, b| values[*a].total_cmp(&values[*b]));
    let cutoff = values[idx[s - m - 1]];
    let mut tail: Vec<usize> = idx[s - m..].to_vec();
    tail.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    let y: Vec<f64> = tail.iter().map(|&i| values[i] - cutoff).collect();
    // Equal to rounding (e.g. q = p exactly): no tail to fit.
    if y[m - 1] <= 1e-9 * values[tail[m - 1]].abs() {
        return Some((tail, cutoff, f64::NEG_INFINITY, 0.0));
    }
    let (k, sigma) = gpd_fit(&y);
    let k = (m as f64 * k + 10.0 * 0.5) / (m as f64 + 10.0);
    Some((tail, cutoff, k, sigma))
}

/// Pareto k̂ of the right tail of non-negative `values` (weights, or weights × |h|).
/// NaN when there are too few values to fit a tail; −∞ for a flat tail.
pub fn pareto_k(values: &[f64]) -> f64 {
    fit_tail(values).map_or(f64::NAN, |(_, _, k, _)| k)
}

/// [`pareto_k`] of the weights of unnormalised log-weights ([`super::Weights::from_log`]);
/// NaN without a finite log-weight.
pub fn pareto_k_of_log(log_w: &[f64]) -> f64 {
    super::Weights::from_log(log_w).map_or(f64::NAN, |w| pareto_k(w.raw()))
}

/// Smooth the largest weights in place (see the module docs); returns k̂ (as [`pareto_k`]).
/// Weights are left unchanged when k̂ is not finite.
pub fn smooth(w: &mut [f64]) -> f64 {
    let Some((tail, cutoff, k, sigma)) = fit_tail(w) else {
        return f64::NAN;
    };
    if !(k.is_finite() && sigma > 0.0) {
        return k;
    }
    let w_max = w[*tail.last().unwrap()];
    let m = tail.len() as f64;
    for (z, &i) in tail.iter().enumerate() {
        let q = gpd_quantile((z as f64 + 0.5) / m, k, sigma);
        w[i] = (cutoff + q).min(w_max);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Weights drawn from a Pareto law with tail index 1/k have k̂ ≈ k.
    #[test]
    fn pareto_k_recovers_the_tail_index() {
        let mut rng = crate::rng::seeded(4);
        for k in [0.2, 0.5, 0.8] {
            let w: Vec<f64> = (0..40_000)
                .map(|_| (1.0 - rng.random::<f64>()).powf(-k))
                .collect();
            let kh = pareto_k(&w);
            assert!((kh - k).abs() < 0.1, "k = {k}: k̂ = {kh}");
        }
        // Light (exponential-family) tails read near or below 0; flat ones as −∞.
        let w: Vec<f64> = (0..40_000).map(|_| rng.random::<f64>()).collect();
        assert!(pareto_k(&w) < 0.0);
        assert_eq!(pareto_k(&[1.0; 1000]), f64::NEG_INFINITY);
        assert!(pareto_k(&[1.0, 2.0, 3.0]).is_nan());
    }

    #[test]
    fn smoothing_keeps_order_and_caps_at_the_largest_weight() {
        let mut rng = crate::rng::seeded(5);
        let raw: Vec<f64> = (0..10_000)
            .map(|_| (1.0 - rng.random::<f64>()).powf(-0.6))
            .collect();
        let mut w = raw.clone();
        let k = smooth(&mut w);
        let max = raw.iter().cloned().fold(0.0, f64::max);
        assert!(k > 0.4 && k < 0.8, "{k}");
        assert!(w.iter().all(|v| *v <= max && *v > 0.0));
        // Only the tail changed, and the sum moved by less than the tail's own mass.
        let changed = raw.iter().zip(&w).filter(|(a, b)| a != b).count();
        assert!(changed <= tail_len(10_000));
        assert!(
            k_threshold(10_000) == 0.5
                && (k_threshold(50) - (1.0 - 1.0 / 50f64.log10())).abs() < 1e-12
        );
    }
}
