//! The seed article's worked example as a transform on (0, ∞)²:
//!
//! ```text
//! forward (x, y) → (u, v) = (x + y, x/(x + y)),   inverse x = u v, y = u (1 − v)
//! |det ∂(u,v)/∂(x,y)| = 1/(x + y) = 1/u
//! ```
//!
//! For x, y i.i.d. Exp(λ), the change of variables gives p(u, v) = λ² u e^{−λu}: u ~ Gamma(2, λ)
//! independent of v ~ Uniform(0, 1). No parameters.

use serde::{Deserialize, Serialize};

use super::params::{ParamSet, Scope};
use super::Bijection;
use crate::engine::Var;

/// (x, y) ↦ (x + y, x/(x + y)).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SumRatio {
    #[serde(skip)]
    empty: ParamSet,
}

impl Bijection for SumRatio {
    fn dim(&self) -> usize {
        2
    }
    fn cond_dim(&self) -> usize {
        0
    }
    fn forward_and_log_det<'g>(
        &self,
        _s: &Scope<'g>,
        z: Var<'g>,
        _c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (x, y) = (z.slice(1, 0, 1), z.slice(1, 1, 2));
        let u = x + y;
        let v = x / u;
        (u.concat(v, 1), u.sum(1).ln().neg())
    }
    fn inverse_and_log_det<'g>(
        &self,
        _s: &Scope<'g>,
        w: Var<'g>,
        _c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (u, v) = (w.slice(1, 0, 1), w.slice(1, 1, 2));
        let x = u * v;
        let y = u * v.neg().add_scalar(1.0);
        (x.concat(y, 1), u.sum(1).ln())
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![]
    }
    fn describe(&self) -> String {
        "SumRatio((x, y) → (x + y, x/(x + y)))".into()
    }
}
