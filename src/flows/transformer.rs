//! The scalar transformers of a coupling layer: each transformed coordinate v goes through a
//! monotonic map whose parameters come from the conditioner.
//!
//! ```text
//! Affine:  (s̃, t) per coordinate, s = a·tanh(s̃/a) (a = 3),   g(v) = v·eˢ + t,   log g' = s
//! Spline:  3K − 1 per coordinate, a rational-quadratic spline on [−B, B] (see super::spline)
//! ```
//!
//! Zero parameters give the identity for both.

use serde::{Deserialize, Serialize};

use super::spline::fused;
use crate::engine::rqs::Rqs;
use crate::engine::Var;

/// Bound a on the affine log-scale |s|.
pub const AFFINE_SCALE_BOUND: f64 = 3.0;

/// The scalar transformer of a coupling layer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Transformer {
    /// Affine (RealNVP; Dinh, Sohl-Dickstein & Bengio 2017).
    Affine,
    /// Rational-quadratic spline with `bins` bins on [−bound, bound] (Neural Spline Flows;
    /// Durkan et al. 2019).
    Spline {
        /// Number of bins K.
        bins: usize,
        /// Tail bound B.
        bound: f64,
    },
}

impl Transformer {
    /// Conditioner outputs per transformed coordinate.
    pub fn params_per_coordinate(&self) -> usize {
        match *self {
            Transformer::Affine => 2,
            Transformer::Spline { bins, bound } => Rqs {
                bins,
                bound,
                inverse: false,
            }
            .n_params(),
        }
    }

    /// Why these settings cannot make a monotonic map, if they cannot.
    pub fn check(&self) -> crate::Result<()> {
        if let Transformer::Spline { bins, bound } = *self {
            // K bins of at least the minimum width must fit: K · 10⁻³ < 1.
            if !((2..=512).contains(&bins) && bound.is_finite() && bound > 0.0) {
                return crate::error::input_err(format!(
                    "a spline needs 2 ≤ bins ≤ 512 and a positive finite bound (got bins = {bins}, \
                     bound = {bound})"
                ));
            }
        }
        Ok(())
    }

    /// The map of each coordinate of `v` `[batch, m]` with raw parameters `raw`
    /// `[batch, m·params_per_coordinate]`: (g(v), log g'(v)) per coordinate, or with `inverse`,
    /// (g⁻¹(v), −log g'(g⁻¹(v))).
    pub fn apply<'g>(&self, raw: Var<'g>, v: Var<'g>, inverse: bool) -> (Var<'g>, Var<'g>) {
        match *self {
            Transformer::Affine => {
                let m = v.shape().dims()[1].resolve(0);
                let a = AFFINE_SCALE_BOUND;
                let s = raw.slice(1, 0, m).mul_scalar(1.0 / a).tanh().mul_scalar(a);
                let t = raw.slice(1, m, 2 * m);
                if inverse {
                    ((v - t) * s.neg().exp(), s.neg())
                } else {
                    (v * s.exp() + t, s)
                }
            }
            Transformer::Spline { bins, bound } => fused(raw, v, bins, bound, inverse),
        }
    }
}
