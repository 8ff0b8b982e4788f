//! Normalizing flows as luminal graph builders.
//!
//! **Direction**: `forward` maps base z → state x, `inverse` maps x → z (see the crate doc).
//! Every transform implements [`Bijection`]: the fused `forward_and_log_det` and
//! `inverse_and_log_det` build graph fragments returning the output and log|det J| of the
//! direction taken, per sample (`[batch]`); `forward`/`inverse` are derived. Every method takes
//! the condition features (`None` for an unconditioned flow) even when it ignores them, so a
//! chain just passes them on.
//!
//! Transforms, one file each: [`AffineCoupling`] (RealNVP), [`SplineCoupling`] (rational-
//! quadratic splines, Neural Spline Flows), [`Radial`], [`LinearFlow`] (lower-triangular),
//! [`LuLinear`], [`Permutation`] (incl. reverse), [`ActNorm`], [`LatticeCoupling`] (checkerboard
//! coupling with a periodic convolutional conditioner), and [`SumRatio`] (the seed's
//! worked example). [`Flow`] is a standard-normal base plus a chain; [`builders`] has the
//! factory functions.

pub mod actnorm;
pub mod affine_coupling;
pub mod builders;
pub mod flow;
pub mod io;
pub mod lattice_coupling;
pub mod linear;
pub mod lu_linear;
pub mod mlp;
pub mod params;
pub mod permutation;
pub mod radial;
pub mod spline;
pub mod spline_coupling;
pub mod sum_ratio;

pub use actnorm::ActNorm;
pub use affine_coupling::AffineCoupling;
pub use builders::{coupling_flow, linear_flow, radial_flow, CouplingConfig, Transformer};
pub use flow::{Conditioning, Flow, Samples};
pub use lattice_coupling::LatticeCoupling;
pub use linear::LinearFlow;
pub use lu_linear::LuLinear;
pub use mlp::{Activation, Mlp};
pub use params::{ParamSet, Scope};
pub use permutation::Permutation;
pub use radial::Radial;
pub use spline_coupling::SplineCoupling;
pub use sum_ratio::SumRatio;

use serde::{Deserialize, Serialize};

use crate::engine::Var;

/// An invertible map with a tractable Jacobian determinant, written as graph builders.
pub trait Bijection {
    /// Dimension of the state.
    fn dim(&self) -> usize;
    /// Number of condition features it reads (0: unconditioned).
    fn cond_dim(&self) -> usize;
    /// x = f(z; c) and log|det ∂f/∂z| per sample.
    fn forward_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        z: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>);
    /// z = f⁻¹(x; c) and log|det ∂f⁻¹/∂x| per sample.
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>);
    /// x = f(z; c).
    fn forward<'g>(&self, s: &Scope<'g>, z: Var<'g>, c: Option<Var<'g>>) -> Var<'g> {
        self.forward_and_log_det(s, z, c).0
    }
    /// z = f⁻¹(x; c).
    fn inverse<'g>(&self, s: &Scope<'g>, x: Var<'g>, c: Option<Var<'g>>) -> Var<'g> {
        self.inverse_and_log_det(s, x, c).0
    }
    /// The parameter sets (own and nested), with their scope names.
    fn param_sets(&self) -> Vec<(String, &ParamSet)>;
    /// Mutable access to the same, in the same order.
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)>;
    /// A one-line description.
    fn describe(&self) -> String;
}

/// One layer of a flow: every transform, serialisable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Layer {
    AffineCoupling(AffineCoupling),
    SplineCoupling(SplineCoupling),
    Radial(Radial),
    LatticeCoupling(LatticeCoupling),
    Linear(LinearFlow),
    LuLinear(LuLinear),
    Permutation(Permutation),
    ActNorm(ActNorm),
    SumRatio(SumRatio),
}

macro_rules! dispatch {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            Layer::AffineCoupling($l) => $e,
            Layer::SplineCoupling($l) => $e,
            Layer::Radial($l) => $e,
            Layer::LatticeCoupling($l) => $e,
            Layer::Linear($l) => $e,
            Layer::LuLinear($l) => $e,
            Layer::Permutation($l) => $e,
            Layer::ActNorm($l) => $e,
            Layer::SumRatio($l) => $e,
        }
    };
}

impl Bijection for Layer {
    fn dim(&self) -> usize {
        dispatch!(self, l => l.dim())
    }
    fn cond_dim(&self) -> usize {
        dispatch!(self, l => l.cond_dim())
    }
    fn forward_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        z: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        dispatch!(self, l => l.forward_and_log_det(s, z, c))
    }
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        dispatch!(self, l => l.inverse_and_log_det(s, x, c))
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        dispatch!(self, l => l.param_sets())
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        dispatch!(self, l => l.param_sets_mut())
    }
    fn describe(&self) -> String {
        dispatch!(self, l => l.describe())
    }
}

/// Zero log-determinant per sample, `[batch]`.
pub(crate) fn zero_log_det<'g>(x: Var<'g>) -> Var<'g> {
    x.constant(0.0).expand(0, crate::engine::Dim::Batch)
}

/// Split `x` `[batch, d]` into (untouched, transformed) column ranges for a coupling layer:
/// the first ⌊d/2⌋ columns and the rest, swapped when `flip`.
pub(crate) fn coupling_split(d: usize, flip: bool) -> ((usize, usize), (usize, usize)) {
    let h = d / 2;
    if flip {
        ((d - h, d), (0, d - h))
    } else {
        ((0, h), (h, d))
    }
}

/// Reassemble a coupling layer's output from its two column ranges.
pub(crate) fn coupling_join<'g>(a: Option<Var<'g>>, b: Var<'g>, flip: bool) -> Var<'g> {
    match (a, flip) {
        (None, _) => b,
        (Some(a), false) => a.concat(b, 1),
        (Some(a), true) => b.concat(a, 1),
    }
}

/// Columns `[lo, hi)` of `x`, or `None` when empty.
pub(crate) fn columns<'g>(x: Var<'g>, (lo, hi): (usize, usize)) -> Option<Var<'g>> {
    (hi > lo).then(|| x.slice(1, lo, hi))
}

/// Conditioner input: the untouched columns and the condition features, concatenated.
pub(crate) fn conditioner_input<'g>(a: Option<Var<'g>>, c: Option<Var<'g>>) -> Option<Var<'g>> {
    match (a, c) {
        (Some(a), Some(c)) => Some(a.concat(c, 1)),
        (Some(a), None) => Some(a),
        (None, c) => c,
    }
}
