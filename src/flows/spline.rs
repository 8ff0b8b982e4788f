//! Monotonic rational-quadratic splines (Gregory & Delbourgo 1982; Durkan et al. 2019, Neural
//! Spline Flows) as graph fragments.
//!
//! K bins on [−B, B], identity (linear tails) outside. From unconstrained parameters
//! (θ_w, θ_h ∈ ℝᴷ, θ_d ∈ ℝᴷ⁻¹) per transformed coordinate:
//!
//! ```text
//! w = m_w + (1 − K m_w) softmax(θ_w),  h likewise  (bin widths/heights as fractions of 2B)
//! d_k = m_d + softplus(θ_d,k + c₀), c₀ = log(e^{1−m_d} − 1)  (so θ = 0 gives d = 1), d₀ = d_K = 1
//! ```
//!
//! For x in bin k with s = h_k/w_k, ξ = (x − x_k)/w_k:
//!
//! ```text
//! g(x)  = y_k + h_k [s ξ² + d_k ξ(1−ξ)] / [s + (d_{k+1} + d_k − 2s) ξ(1−ξ)]
//! g'(x) = s² [d_{k+1} ξ² + 2s ξ(1−ξ) + d_k (1−ξ)²] / [s + (d_{k+1} + d_k − 2s) ξ(1−ξ)]²
//! ```
//!
//! Inverse: δ = d_{k+1} + d_k − 2s, Δ = y − y_k, a = h_k(s − d_k) + Δδ, b = h_k d_k − Δδ,
//! c = −sΔ, ξ = 2c / (−b − √max(b² − 4ac, 0)).
//!
//! Safety: the input is clamped into [−B, B] *before* the spline math and the result is
//! selected afterwards (so the unused branch never sees a far-out value and never produces a
//! NaN gradient), the discriminant is clamped at 0, and the bin search is the count of knots
//! below the clamped input, (x ≥ knots).sum() − 1, gathered with a one-hot.
//! Defaults: K = 8 bins, B = 5, minimum bin width/height 10⁻³, minimum derivative 10⁻³.

use crate::engine::{Dim, Var};

/// Default number of bins.
pub const DEFAULT_BINS: usize = 8;
/// Default tail bound B.
pub const DEFAULT_BOUND: f64 = 5.0;
/// Minimum bin width and height (as a fraction of 2B).
pub const MIN_BIN: f64 = 1e-3;
/// Minimum knot derivative.
pub const MIN_DERIVATIVE: f64 = 1e-3;

/// Number of unconstrained parameters per transformed coordinate.
pub fn n_params(bins: usize) -> usize {
    3 * bins - 1
}

/// Knots of a batch of splines, each `[batch, m, K]`.
pub struct Knots<'g> {
    x_lo: Var<'g>,
    w: Var<'g>,
    y_lo: Var<'g>,
    h: Var<'g>,
    d_lo: Var<'g>,
    d_hi: Var<'g>,
    bound: f64,
    bins: usize,
}

fn normalised_sizes<'g>(theta: Var<'g>, bins: usize, bound: f64) -> (Var<'g>, Var<'g>) {
    let frac = theta
        .softmax(2)
        .mul_scalar(1.0 - MIN_BIN * bins as f64)
        .add_scalar(MIN_BIN);
    let size = frac.mul_scalar(2.0 * bound);
    // Lower knot of each bin: −B + Σ_{j<k} size_j = −B + cumsum(size) − size.
    let lo = (size.cumsum_last() - size).add_scalar(-bound);
    (lo, size)
}

impl<'g> Knots<'g> {
    /// Build from raw conditioner output `[batch, m·(3K−1)]`.
    pub fn new(raw: Var<'g>, m: usize, bins: usize, bound: f64) -> Knots<'g> {
        let p = n_params(bins);
        let theta = raw.reshape(&[Dim::Batch, Dim::Fixed(m), Dim::Fixed(p)]);
        let (x_lo, w) = normalised_sizes(theta.slice(2, 0, bins), bins, bound);
        let (y_lo, h) = normalised_sizes(theta.slice(2, bins, 2 * bins), bins, bound);
        let c0 = ((1.0 - MIN_DERIVATIVE).exp() - 1.0).ln();
        let d_int = theta
            .slice(2, 2 * bins, p)
            .add_scalar(c0)
            .softplus()
            .add_scalar(MIN_DERIVATIVE);
        let ends: Vec<f64> = (0..=bins)
            .map(|i| if i == 0 || i == bins { 1.0 } else { 0.0 })
            .collect();
        let e = raw.builder().constant_tensor(&[bins + 1], ends);
        let d = d_int.pad(2, 1, 1) + e;
        Knots {
            x_lo,
            w,
            y_lo,
            h,
            d_lo: d.slice(2, 0, bins),
            d_hi: d.slice(2, 1, bins + 1),
            bound,
            bins,
        }
    }

    /// Gather the bin parameters for points `v` `[batch, m]` located on knots `lo`.
    fn locate(&self, v: Var<'g>, lo: Var<'g>) -> [Var<'g>; 6] {
        let ve = v.expand(2, Dim::Fixed(self.bins));
        let bin = ve.ge(lo).sum(2).add_scalar(-1.0);
        let oh = bin.one_hot(self.bins);
        let pick = |p: Var<'g>| (oh * p).sum(2);
        [
            pick(self.x_lo),
            pick(self.w),
            pick(self.y_lo),
            pick(self.h),
            pick(self.d_lo),
            pick(self.d_hi),
        ]
    }

    fn inside(&self, v: Var<'g>) -> Var<'g> {
        let b = self.bound;
        v.constant(-b).lt(v) * v.lt(v.constant(b))
    }

    /// g(x) and log g'(x) per coordinate, identity outside [−B, B].
    pub fn forward(&self, x: Var<'g>) -> (Var<'g>, Var<'g>) {
        let b = self.bound;
        let xc = x.clamp(-b, b);
        let [xk, wk, yk, hk, dk, dk1] = self.locate(xc, self.x_lo);
        let s = hk / wk;
        let xi = ((xc - xk) / wk).clamp(0.0, 1.0);
        let om = xi.neg().add_scalar(1.0);
        let xo = xi * om;
        let den = s + (dk1 + dk - s * 2.0) * xo;
        let num = hk * (s * xi * xi + dk * xo);
        let y = yk + num / den;
        let dnum = s * s * (dk1 * xi * xi + s * xo * 2.0 + dk * om * om);
        let log_grad = dnum.ln() - den.ln() * 2.0;
        let inside = self.inside(x);
        (Var::select(inside, y, x), inside * log_grad)
    }

    /// g⁻¹(y) and log |dg⁻¹/dy| per coordinate, identity outside [−B, B].
    pub fn inverse(&self, y: Var<'g>) -> (Var<'g>, Var<'g>) {
        let b = self.bound;
        let yc = y.clamp(-b, b);
        let [xk, wk, yk, hk, dk, dk1] = self.locate(yc, self.y_lo);
        let s = hk / wk;
        let delta = dk1 + dk - s * 2.0;
        let dy = yc - yk;
        let a = hk * (s - dk) + dy * delta;
        let bb = hk * dk - dy * delta;
        let c = (s * dy).neg();
        let disc = (bb * bb - a * c * 4.0).relu();
        let xi = ((c * 2.0) / (bb.neg() - disc.sqrt())).clamp(0.0, 1.0);
        let x = xk + xi * wk;
        let om = xi.neg().add_scalar(1.0);
        let xo = xi * om;
        let den = s + delta * xo;
        let dnum = s * s * (dk1 * xi * xi + s * xo * 2.0 + dk * om * om);
        let log_grad = dnum.ln() - den.ln() * 2.0;
        let inside = self.inside(y);
        (Var::select(inside, x, y), (inside * log_grad).neg())
    }
}
