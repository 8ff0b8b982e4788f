//! The one trait every transform implements.
//!
//! **Direction**: `forward` maps base z → state x, `inverse` maps x → z (see the crate doc).
//! The fused `forward_and_log_det` and `inverse_and_log_det` build graph fragments returning the
//! output and log|det J| of the direction taken, per sample (`[batch]`):
//!
//! ```text
//! forward:  x = f(z; c),   log|det ∂f/∂z|
//! inverse:  z = f⁻¹(x; c), log|det ∂f⁻¹/∂x| = −log|det ∂f/∂z| at z = f⁻¹(x)
//! ```
//!
//! Every method takes the condition features (`None` for an unconditioned flow) even when it
//! ignores them, so a chain just passes them on.

use super::params::{ParamSet, Scope};
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

/// Zero log-determinant per sample, `[batch]`.
pub(crate) fn zero_log_det<'g>(x: Var<'g>) -> Var<'g> {
    x.constant(0.0).expand(0, crate::engine::Dim::Batch)
}
