//! ActNorm (Kingma & Dhariwal 2018): x = z ⊙ exp(s) + b per coordinate, log|det J| = Σ s.
//!
//! Data-dependent initialisation: given samples of the layer's output x, set b = mean(x) and
//! s = log std(x), so that the inverse maps that data to zero mean and unit variance.
//! Zero parameters: the identity.

use serde::{Deserialize, Serialize};

use super::params::{ParamSet, Scope};
use super::Bijection;
use crate::engine::{Dim, Var};
use crate::error::{input_err, Result};

/// Per-coordinate scale and shift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActNorm {
    dim: usize,
    /// `log_scale` and `shift`.
    pub params: ParamSet,
}

impl ActNorm {
    /// The identity on `dim` coordinates.
    pub fn new(dim: usize) -> ActNorm {
        let mut params = ParamSet::default();
        params.push("log_scale", &[dim], vec![0.0; dim]);
        params.push("shift", &[dim], vec![0.0; dim]);
        ActNorm { dim, params }
    }

    /// A fresh layer of this one's dimension, once the stored parameter count matches it.
    pub(crate) fn template(&self) -> Result<ActNorm> {
        super::params::check_count(self.dim.checked_mul(2), &[&self.params])?;
        Ok(ActNorm::new(self.dim))
    }

    /// Data-dependent initialisation from output-side samples `x` (`n × dim`, row-major).
    pub fn init_from_data(&mut self, x: &[f64]) -> Result<()> {
        let d = self.dim;
        if x.is_empty() || !x.len().is_multiple_of(d) || x.iter().any(|v| !v.is_finite()) {
            return input_err("ActNorm initialisation needs finite samples with dim columns");
        }
        let n = (x.len() / d) as f64;
        for j in 0..d {
            let mean = x.iter().skip(j).step_by(d).sum::<f64>() / n;
            let var = x
                .iter()
                .skip(j)
                .step_by(d)
                .map(|v| (v - mean).powi(2))
                .sum::<f64>()
                / n;
            self.params.tensors[0].values[j] = 0.5 * var.max(1e-12).ln();
            self.params.tensors[1].values[j] = mean;
        }
        Ok(())
    }
}

impl Bijection for ActNorm {
    fn dim(&self) -> usize {
        self.dim
    }
    fn cond_dim(&self) -> usize {
        0
    }
    fn forward_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        z: Var<'g>,
        _c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (ls, b) = (
            s.param(&self.params, "log_scale"),
            s.param(&self.params, "shift"),
        );
        (z * ls.exp() + b, ls.sum_all().expand(0, Dim::Batch))
    }
    fn inverse_and_log_det<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        _c: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>) {
        let (ls, b) = (
            s.param(&self.params, "log_scale"),
            s.param(&self.params, "shift"),
        );
        (
            (x - b) * ls.neg().exp(),
            ls.sum_all().neg().expand(0, Dim::Batch),
        )
    }
    fn param_sets(&self) -> Vec<(String, &ParamSet)> {
        vec![(String::new(), &self.params)]
    }
    fn param_sets_mut(&mut self) -> Vec<(String, &mut ParamSet)> {
        vec![(String::new(), &mut self.params)]
    }
    fn describe(&self) -> String {
        format!("ActNorm(dim={})", self.dim)
    }
}
