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
//! The spline runs as one fused engine kernel with a hand-written adjoint ([`fused`], the
//! engine's `rqs`), checked in the engine tests against an independent f64 implementation and
//! finite differences.
//!
//! Safety: the input is clamped into [−B, B] *before* the spline math and the result is
//! selected afterwards (so no formula ever sees a far-out value and no NaN gradient arises),
//! the discriminant is clamped at 0, and the bin is the count of knots at or below the input.
//! Defaults: K = 8 bins, B = 5, minimum bin width/height 10⁻³, minimum derivative 10⁻³.

use crate::engine::rqs::Rqs;
use crate::engine::{Dim, Var};

/// Default number of bins.
pub const DEFAULT_BINS: usize = 8;
/// Default tail bound B.
pub const DEFAULT_BOUND: f64 = 5.0;
pub use crate::engine::rqs::{MIN_BIN, MIN_DERIVATIVE};

/// The spline of each coordinate of `v` `[batch, m]` with raw conditioner output `raw`
/// `[batch, m·(3K−1)]`, as the engine's fused kernel: (g(v), log g'(v)) or, with `inverse`,
/// (g⁻¹(v), −log g'(g⁻¹(v))), identity outside [−B, B].
pub fn fused<'g>(
    raw: Var<'g>,
    v: Var<'g>,
    bins: usize,
    bound: f64,
    inverse: bool,
) -> (Var<'g>, Var<'g>) {
    let rqs = Rqs {
        bins,
        bound,
        inverse,
    };
    let m = v.shape().dims()[1];
    let theta = raw.reshape(&[Dim::Batch, m, Dim::Fixed(rqs.n_params())]);
    v.rqs(theta, rqs)
}
