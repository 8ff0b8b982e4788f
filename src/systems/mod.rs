//! Physical systems: potential energies U(x) in f64, host side.
//!
//! Every system implements [`Energy`]: a dimension, U for one configuration, optionally an
//! analytic gradient (the default is a central difference), and a description of its
//! parameters. The batch methods [`Energy::energies`] and [`Energy::gradients`] validate
//! their input (shape, finite coordinates) and return errors, never panic. An energy that is
//! itself NaN or ±∞ for some configuration is passed on as such: the estimators give that
//! sample zero weight and count it.
//!
//! Systems are built by name with `key=value` parameters through [`build`]; the names are the
//! same in the library, the CLI and JSON output. Your own potential is a system too: a
//! closure on dual numbers ([`custom()`]) or an expression typed as text ([`expression()`]),
//! with exact gradients, checked for normalisability before a sweep ([`check_normalisable`]).

mod bead_chain;
pub mod custom;
mod double_well_1d;
mod double_well_2d;
pub mod expression;
mod harmonic;
mod lj;
mod mixture;
mod muller_brown;
mod phi4;
pub mod u1;
pub mod xy;

pub use bead_chain::BeadChain;
pub use custom::{check_normalisable, custom, expression, Custom, Dual64, DualNum};
pub use double_well_1d::DoubleWell1d;
pub use double_well_2d::DoubleWell2d;
pub use harmonic::Harmonic;
pub use lj::LennardJones;
pub use mixture::Mixture;
pub use muller_brown::MullerBrown;
pub use phi4::Phi4;
pub use u1::U1;
pub use xy::Xy;

use std::collections::BTreeMap;
use std::sync::Arc;

use ndarray::{Array1, Array2, ArrayView2};

use crate::error::{input_err, Error, Result};

/// A named parameter of a system with its default and meaning.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Name used in `key=value`.
    pub name: &'static str,
    /// Default value.
    pub default: f64,
    /// One-line meaning.
    pub doc: &'static str,
}

/// What a system's coordinates are, for choosing its flow.
#[derive(Clone, Copy, Debug)]
pub enum Structure<'a> {
    /// Coordinates with no structure the flows know of: coupling flows on all of them.
    Generic,
    /// A scalar field on a periodic L×L lattice: translation-equivariant lattice couplings.
    Lattice(&'a Phi4),
    /// A planar bead-spring chain: flows on bond lengths and angles, centre of mass and
    /// rotation exact.
    Chain(&'a BeadChain),
    /// Identical atoms in a trap: flows on centre-of-mass-free modes, centre of mass exact.
    Cluster(&'a LennardJones),
    /// Gauge links (angles on the circle): the gauge-equivariant flow
    /// ([`crate::flows::GaugeCoupling`], `mcmc --sampler flow`); the coupling flows on real
    /// coordinates do not apply ([`flows_apply`]).
    Gauge(&'a U1),
    /// Planar spins (angles on the circle) on a periodic L × L lattice: the checkerboard flow of
    /// circular splines ([`crate::flows::SpinCoupling`]); like gauge links, not the coupling
    /// flows on real coordinates ([`flows_apply`]).
    Spins(&'a Xy),
}

/// Whether the flows on real coordinates (coupling flows, the lattice flow) model this
/// system: an error naming what does where they do not (angles — gauge links, planar spins —
/// whose density on ℝⁿ is not normalisable; their flows on the circle sample them through
/// `thermoflow mcmc` and `thermoflow sweep`).
pub fn flows_apply(energy: &dyn Energy) -> Result<()> {
    let what = match energy.structure() {
        Structure::Gauge(_) => "gauge links need the gauge-equivariant flow",
        Structure::Spins(_) => "planar spins need the checkerboard flow of circular splines",
        _ => return Ok(()),
    };
    let name = energy.name();
    input_err(format!(
        "{name}: {what}, which `thermoflow mcmc --system {name} --sampler flow` (or hmc, rwm) and `thermoflow sweep --system {name}` use; the rare-event estimates do not take it yet"
    ))
}

/// A potential energy surface.
pub trait Energy: Send + Sync {
    /// Registry name (e.g. `double-well-2d`).
    fn name(&self) -> &str;
    /// Number of coordinates.
    fn dim(&self) -> usize;
    /// Parameter values in effect (all of them, defaults filled in).
    fn params(&self) -> Vec<(String, f64)>;
    /// U(x) for one configuration of length `dim()`.
    fn energy(&self, x: &[f64]) -> f64;
    /// U(x) and ∇U(x) (written into `grad`). Default: central differences, step 1e-5·(1+|x_i|).
    fn energy_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let mut y = x.to_vec();
        for i in 0..x.len() {
            let h = 1e-5 * (1.0 + x[i].abs());
            y[i] = x[i] + h;
            let up = self.energy(&y);
            y[i] = x[i] - h;
            let dn = self.energy(&y);
            y[i] = x[i];
            grad[i] = (up - dn) / (2.0 * h);
        }
        self.energy(x)
    }
    /// The harmonic system behind this energy, if it is one (closed-form references).
    fn as_harmonic(&self) -> Option<&Harmonic> {
        None
    }
    /// What the coordinates are, so that a sweep builds a flow that respects them (default:
    /// generic coordinates).
    fn structure(&self) -> Structure<'_> {
        Structure::Generic
    }
    /// A box that holds nearly all Boltzmann mass at moderate temperatures (quadrature hint).
    fn bounds(&self) -> Option<Vec<(f64, f64)>> {
        None
    }
    /// The system's own observables, which `--observe NAME` takes by name (default: none;
    /// see [`crate::observables`]).
    fn observables(&self) -> Vec<crate::observables::Observable> {
        Vec::new()
    }

    /// Energies of a batch (rows are configurations). Errors on a wrong width or a
    /// non-finite coordinate.
    fn energies(&self, x: ArrayView2<f64>) -> Result<Array1<f64>> {
        check_batch(self.dim(), &x)?;
        Ok(x.rows()
            .into_iter()
            .map(|r| match r.as_slice() {
                Some(s) => self.energy(s),
                None => self.energy(&r.to_vec()),
            })
            .collect())
    }

    /// Energies and gradients of a batch.
    fn gradients(&self, x: ArrayView2<f64>) -> Result<(Array1<f64>, Array2<f64>)> {
        check_batch(self.dim(), &x)?;
        let (n, d) = x.dim();
        let mut g = Array2::zeros((n, d));
        let mut u = Array1::zeros(n);
        let mut buf = vec![0.0; d];
        for (i, r) in x.rows().into_iter().enumerate() {
            let row = r.to_vec();
            u[i] = self.energy_grad(&row, &mut buf);
            g.row_mut(i).assign(&Array1::from(buf.clone()));
        }
        Ok((u, g))
    }
}

/// Energies of the rows of a flat row-major batch (`dim` values per row), evaluated in
/// parallel; NaN for a row with a non-finite coordinate (a flow sample that overflowed), so that
/// its importance weight is zero.
pub fn parallel_energies(energy: &dyn Energy, flat: &[f64], dim: usize) -> Vec<f64> {
    use rayon::prelude::*;
    flat.par_chunks(dim)
        .map(|r| {
            if r.iter().all(|v| v.is_finite()) {
                energy.energy(r)
            } else {
                f64::NAN
            }
        })
        .collect()
}

/// Validate a batch of configurations against a dimension.
pub fn check_batch(dim: usize, x: &ArrayView2<f64>) -> Result<()> {
    if x.ncols() != dim {
        return input_err(format!(
            "configurations have {} coordinates, the system has {dim}",
            x.ncols()
        ));
    }
    if let Some((i, _)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return input_err(format!(
            "configuration {} has a non-finite coordinate",
            i / dim.max(1)
        ));
    }
    Ok(())
}

/// Check a temperature.
pub fn check_temperature(t: f64) -> Result<()> {
    if !(t.is_finite() && t > 0.0) {
        return input_err(format!("temperature must be positive and finite, got {t}"));
    }
    Ok(())
}

/// Parameters given as `key=value` strings, resolved against a system's [`ParamSpec`]s.
#[derive(Clone, Debug, Default)]
pub struct Params {
    given: BTreeMap<String, String>,
}

impl Params {
    /// Parse `key=value` items.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Params> {
        let mut given = BTreeMap::new();
        for it in items {
            let it = it.as_ref();
            let (k, v) = it
                .split_once('=')
                .ok_or_else(|| Error::Input(format!("parameter {it:?} is not key=value")))?;
            if given
                .insert(k.trim().to_string(), v.trim().to_string())
                .is_some()
            {
                return input_err(format!("parameter {k:?} given twice"));
            }
        }
        Ok(Params { given })
    }

    /// Resolve every spec (numbers), rejecting unknown keys except those in `extra`.
    pub fn resolve(&self, system: &str, specs: &[ParamSpec], extra: &[&str]) -> Result<Vec<f64>> {
        for k in self.given.keys() {
            if !specs.iter().any(|s| s.name == k) && !extra.contains(&k.as_str()) {
                let known: Vec<&str> = specs
                    .iter()
                    .map(|s| s.name)
                    .chain(extra.iter().copied())
                    .collect();
                return input_err(format!(
                    "unknown parameter {k:?} for system {system:?} (known: {})",
                    known.join(", ")
                ));
            }
        }
        specs
            .iter()
            .map(|s| match self.given.get(s.name) {
                None => Ok(s.default),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        Error::Input(format!("parameter {}={v:?} is not a finite number", s.name))
                    }),
            })
            .collect()
    }

    /// A raw string value.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.given.get(key).map(String::as_str)
    }
}

/// A registered system: name, one-line description, parameters.
#[derive(Clone, Debug)]
pub struct SystemInfo {
    /// Registry name.
    pub name: &'static str,
    /// Description with the formula.
    pub doc: &'static str,
    /// Parameters.
    pub params: &'static [ParamSpec],
}

/// Every built-in system.
pub fn registry() -> Vec<SystemInfo> {
    vec![
        harmonic::INFO,
        double_well_1d::INFO,
        double_well_2d::INFO,
        muller_brown::INFO,
        mixture::INFO,
        phi4::INFO,
        lj::INFO,
        bead_chain::INFO,
        u1::INFO,
        xy::INFO,
    ]
}

/// Build a system by name from `key=value` parameters.
pub fn build<S: AsRef<str>>(name: &str, params: &[S]) -> Result<Arc<dyn Energy>> {
    let p = Params::parse(params)?;
    Ok(match name {
        "harmonic" => Arc::new(Harmonic::from_params(&p)?),
        "double-well-1d" => Arc::new(DoubleWell1d::from_params(&p)?),
        "double-well-2d" => Arc::new(DoubleWell2d::from_params(&p)?),
        "muller-brown" => Arc::new(MullerBrown::from_params(&p)?),
        "mixture" => Arc::new(Mixture::from_params(&p)?),
        "phi4" => Arc::new(Phi4::from_params(&p)?),
        "lj" => Arc::new(LennardJones::from_params(&p)?),
        "bead-chain" => Arc::new(BeadChain::from_params(&p)?),
        "u1" => Arc::new(U1::from_params(&p)?),
        "xy" => Arc::new(Xy::from_params(&p)?),
        other => {
            let names: Vec<&str> = registry().iter().map(|s| s.name).collect();
            return input_err(format!(
                "unknown system {other:?} (known: {})",
                names.join(", ")
            ));
        }
    })
}

/// Names and values of specs, for [`Energy::params`].
pub(crate) fn named(specs: &[ParamSpec], values: &[f64]) -> Vec<(String, f64)> {
    specs
        .iter()
        .zip(values)
        .map(|(s, &v)| (s.name.to_string(), v))
        .collect()
}

/// A positive-integer parameter.
pub(crate) fn count(name: &str, v: f64, min: usize) -> Result<usize> {
    if v.fract() != 0.0 || v < min as f64 || v > 1e6 {
        return input_err(format!(
            "parameter {name} must be an integer ≥ {min}, got {v}"
        ));
    }
    Ok(v as usize)
}

/// A strictly positive parameter.
pub(crate) fn positive(name: &str, v: f64) -> Result<f64> {
    if v <= 0.0 {
        return input_err(format!("parameter {name} must be > 0, got {v}"));
    }
    Ok(v)
}
