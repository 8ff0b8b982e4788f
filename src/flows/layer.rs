//! [`Layer`]: every transform as one serialisable enum, dispatching [`Bijection`], and the
//! check of a loaded layer against the architecture it declares.
//!
//! Files written before the general coupling existed name `AffineCoupling` and
//! `SplineCoupling` layers; they load as [`Coupling`]s with the same parameters.

use serde::{Deserialize, Serialize};

use super::bijection::Bijection;
use super::mlp::Mlp;
use super::params::{ParamSet, Scope};
use super::transformer::{Transformer, AFFINE_SCALE_BOUND};
use super::{
    ActNorm, Coupling, GaugeCoupling, LatticeCoupling, LinearFlow, LuLinear, Permutation, Radial,
    SpinCoupling, SpinFrame, SumRatio,
};
use crate::engine::Var;
use crate::error::{input_err, Result};

/// One layer of a flow: every transform, serialisable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LayerFile")]
#[allow(missing_docs)]
pub enum Layer {
    Coupling(Coupling),
    Radial(Radial),
    LatticeCoupling(LatticeCoupling),
    GaugeCoupling(GaugeCoupling),
    SpinCoupling(SpinCoupling),
    SpinFrame(SpinFrame),
    Linear(LinearFlow),
    LuLinear(LuLinear),
    Permutation(Permutation),
    ActNorm(ActNorm),
    SumRatio(SumRatio),
}

macro_rules! dispatch {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            Layer::Coupling($l) => $e,
            Layer::Radial($l) => $e,
            Layer::LatticeCoupling($l) => $e,
            Layer::GaugeCoupling($l) => $e,
            Layer::SpinCoupling($l) => $e,
            Layer::SpinFrame($l) => $e,
            Layer::Linear($l) => $e,
            Layer::LuLinear($l) => $e,
            Layer::Permutation($l) => $e,
            Layer::ActNorm($l) => $e,
            Layer::SumRatio($l) => $e,
        }
    };
}

impl Layer {
    /// Check a loaded layer against the architecture it declares: its hyperparameters, then
    /// the name and shape of every parameter tensor; the error names the first mismatch.
    pub fn check(&self) -> Result<()> {
        let template = match self {
            Layer::Coupling(l) => Layer::Coupling(l.template()?),
            Layer::Radial(l) => Layer::Radial(l.template()?),
            Layer::LatticeCoupling(l) => Layer::LatticeCoupling(l.template()?),
            Layer::GaugeCoupling(l) => Layer::GaugeCoupling(l.template()?),
            Layer::SpinCoupling(l) => Layer::SpinCoupling(l.template()?),
            Layer::SpinFrame(l) => Layer::SpinFrame(l.template()?),
            Layer::Linear(l) => Layer::Linear(l.template()?),
            Layer::LuLinear(l) => Layer::LuLinear(l.template()?),
            Layer::Permutation(l) => Layer::Permutation(l.template()?),
            Layer::ActNorm(l) => Layer::ActNorm(l.template()?),
            Layer::SumRatio(_) => Layer::SumRatio(SumRatio::default()),
        };
        let (got, want) = (self.param_sets(), template.param_sets());
        if got.len() != want.len() {
            return input_err(format!(
                "{} parameter sets, the architecture has {}",
                got.len(),
                want.len()
            ));
        }
        for ((scope, g), (_, w)) in got.into_iter().zip(want) {
            g.check_layout(w).map_err(|e| e.context(scope))?;
        }
        Ok(())
    }
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

/// A layer as files spell it, the coupling layers of version-1 files included.
#[derive(Deserialize)]
enum LayerFile {
    Coupling(Coupling),
    AffineCoupling(OldCoupling),
    SplineCoupling(OldCoupling),
    Radial(Radial),
    LatticeCoupling(LatticeCoupling),
    GaugeCoupling(GaugeCoupling),
    SpinCoupling(SpinCoupling),
    SpinFrame(SpinFrame),
    Linear(LinearFlow),
    LuLinear(LuLinear),
    Permutation(Permutation),
    ActNorm(ActNorm),
    SumRatio(SumRatio),
}

/// The fields of the former `AffineCoupling` (`scale_bound`) and `SplineCoupling` (`bins`,
/// `bound`) layers.
#[derive(Deserialize)]
struct OldCoupling {
    dim: usize,
    cond_dim: usize,
    flip: bool,
    scale_bound: Option<f64>,
    bins: Option<usize>,
    bound: Option<f64>,
    conditioner: Mlp,
}

impl OldCoupling {
    fn into_coupling(self, spline: bool) -> std::result::Result<Coupling, String> {
        let transformer = match (spline, self.bins, self.bound, self.scale_bound) {
            (true, Some(bins), Some(bound), _) => Transformer::Spline { bins, bound },
            (false, _, _, Some(a)) if a == AFFINE_SCALE_BOUND => Transformer::Affine,
            (false, _, _, Some(a)) => {
                return Err(format!(
                "an affine coupling with scale bound {a} (only {AFFINE_SCALE_BOUND} is supported)"
            ))
            }
            _ => return Err("a coupling layer without its transformer's settings".into()),
        };
        Ok(Coupling::from_parts(
            self.dim,
            self.cond_dim,
            self.flip,
            transformer,
            self.conditioner,
        ))
    }
}

impl TryFrom<LayerFile> for Layer {
    type Error = String;
    fn try_from(f: LayerFile) -> std::result::Result<Layer, String> {
        Ok(match f {
            LayerFile::Coupling(l) => Layer::Coupling(l),
            LayerFile::AffineCoupling(l) => Layer::Coupling(l.into_coupling(false)?),
            LayerFile::SplineCoupling(l) => Layer::Coupling(l.into_coupling(true)?),
            LayerFile::Radial(l) => Layer::Radial(l),
            LayerFile::LatticeCoupling(l) => Layer::LatticeCoupling(l),
            LayerFile::GaugeCoupling(l) => Layer::GaugeCoupling(l),
            LayerFile::SpinCoupling(l) => Layer::SpinCoupling(l),
            LayerFile::SpinFrame(l) => Layer::SpinFrame(l),
            LayerFile::Linear(l) => Layer::Linear(l),
            LayerFile::LuLinear(l) => Layer::LuLinear(l),
            LayerFile::Permutation(l) => Layer::Permutation(l),
            LayerFile::ActNorm(l) => Layer::ActNorm(l),
            LayerFile::SumRatio(l) => Layer::SumRatio(l),
        })
    }
}
