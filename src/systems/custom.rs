//! Your own potential as a system: a closure on dual numbers ([`custom`]) or an expression
//! typed as text ([`expression`]), with exact gradients and a check that the Boltzmann
//! distribution exists.
//!
//! **Gradients.** U is evaluated on forward-mode dual numbers (num-dual's `Dual64`): seeding
//! coordinate i with ε = 1 gives U(x) + ε ∂U/∂x_i, exactly, one pass per coordinate. The
//! closure is written once, for `&[Dual64]`; on plain values it runs with ε = 0. Constants go
//! on the right of an operator (`x[0] * 3.0`, not `3.0 * x[0]`); `powi`, `exp`, `sin`, … come
//! with the [`DualNum`] trait (in the prelude).
//!
//! **Normalisability.** exp(−U/T) has a finite integral only if U rises in every direction at
//! least like (d + ε)·T·ln|x|. [`check_normalisable`] probes the coordinate axes, the
//! diagonals of pairs of axes and 32 random directions at |x| = 10 and 10⁴, and rejects a U
//! that rises less than (d + 1)·T·ln(10³) between them, naming the direction and the values.

use std::sync::Arc;

pub use num_dual::{Dual64, DualNum};
use rand::Rng;

use super::expression::Expression;
use super::Energy;
use crate::error::{input_err, Result};

type Closure = dyn Fn(&[Dual64]) -> Dual64 + Send + Sync;

/// A user-defined system.
#[derive(Clone)]
pub struct Custom {
    name: String,
    dim: usize,
    u: Potential,
    bounds: Option<Vec<(f64, f64)>>,
}

impl std::fmt::Debug for Custom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Custom({:?}, dim {})", self.name, self.dim)
    }
}

#[derive(Clone)]
enum Potential {
    Closure(Arc<Closure>),
    Text(Expression),
}

/// A system named `name` on `dim` coordinates with energy `u`, written for dual numbers:
/// `systems::custom("tilted-well", 2, |x| x[0].powi(4) - x[0].powi(2) * 3.0 + x[1].powi(2) * 0.5)`.
pub fn custom(
    name: &str,
    dim: usize,
    u: impl Fn(&[Dual64]) -> Dual64 + Send + Sync + 'static,
) -> Result<Custom> {
    if dim == 0 || name.trim().is_empty() {
        return input_err("a custom system needs a name and dim ≥ 1");
    }
    Ok(Custom {
        name: name.into(),
        dim,
        u: Potential::Closure(Arc::new(u)),
        bounds: None,
    })
}

/// A system from an expression in x0, x1, … (see [`mod@super::expression`]) on `dim` coordinates
/// (default: one more than the highest index it uses).
pub fn expression(text: &str, dim: Option<usize>) -> Result<Custom> {
    let e = Expression::parse(text)?;
    let used = e.coordinates();
    let dim = dim.unwrap_or(used);
    if dim == 0 {
        return input_err("--dim must be at least 1");
    }
    if dim < used {
        return input_err(format!(
            "the energy uses x{} but --dim is {dim}: coordinates are x0 … x{}",
            used.max(1) - 1,
            dim.max(1) - 1
        ));
    }
    Ok(Custom {
        name: format!("energy: {}", e.text().trim()),
        dim,
        u: Potential::Text(e),
        bounds: None,
    })
}

impl Custom {
    /// A box that holds nearly all Boltzmann mass (a hint for quadrature and plots).
    pub fn with_bounds(mut self, bounds: Vec<(f64, f64)>) -> Result<Custom> {
        if bounds.len() != self.dim
            || bounds
                .iter()
                .any(|&(a, b)| !(a < b && a.is_finite() && b.is_finite()))
        {
            return input_err(format!(
                "bounds need {} finite intervals (lo < hi)",
                self.dim
            ));
        }
        self.bounds = Some(bounds);
        Ok(self)
    }

    fn duals(x: &[f64]) -> Vec<Dual64> {
        x.iter().map(|&v| Dual64::from(v)).collect()
    }
}

impl Energy for Custom {
    fn name(&self) -> &str {
        &self.name
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn params(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
    fn energy(&self, x: &[f64]) -> f64 {
        match &self.u {
            Potential::Text(e) => e.eval(x),
            Potential::Closure(f) => f(&Self::duals(x)).re,
        }
    }
    fn energy_grad(&self, x: &[f64], grad: &mut [f64]) -> f64 {
        let mut xs = Self::duals(x);
        let mut u = f64::NAN;
        for i in 0..x.len() {
            xs[i].eps = 1.0;
            let y = match &self.u {
                Potential::Text(e) => e.eval(&xs),
                Potential::Closure(f) => f(&xs),
            };
            xs[i].eps = 0.0;
            (u, grad[i]) = (y.re, y.eps);
        }
        u
    }
    fn bounds(&self) -> Option<Vec<(f64, f64)>> {
        self.bounds.clone()
    }
}

/// Reject an energy whose exp(−U/T) cannot be normalised at temperatures up to `t_max` (see
/// the module doc), or that is not a number far out.
pub fn check_normalisable(e: &dyn Energy, t_max: f64) -> Result<()> {
    let d = e.dim();
    let mut dirs: Vec<Vec<f64>> = Vec::new();
    let unit = |i: usize, s: f64| {
        let mut v = vec![0.0; d];
        v[i] = s;
        v
    };
    for i in 0..d {
        dirs.push(unit(i, 1.0));
        dirs.push(unit(i, -1.0));
    }
    if d <= 16 {
        let h = std::f64::consts::FRAC_1_SQRT_2;
        for i in 0..d {
            for j in i + 1..d {
                for (a, b) in [(h, h), (h, -h), (-h, h), (-h, -h)] {
                    let mut v = vec![0.0; d];
                    (v[i], v[j]) = (a, b);
                    dirs.push(v);
                }
            }
        }
    }
    let mut rng = crate::rng::seeded(0x0a11);
    for _ in 0..32 {
        let v: Vec<f64> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
        dirs.push(v.into_iter().map(|a| a / n).collect());
    }
    let (r0, r1) = (10.0f64, 1e4f64);
    let need = (d as f64 + 1.0) * t_max * (r1 / r0).ln();
    let show = |v: &[f64], r: f64| {
        let s: Vec<String> = v
            .iter()
            .map(|a| format!("{}", (a * r * 1e3).round() / 1e3))
            .collect();
        format!("({})", s.join(", "))
    };
    for v in &dirs {
        let at = |r: f64| e.energy(&v.iter().map(|a| a * r).collect::<Vec<_>>());
        let (u0, u1) = (at(r0), at(r1));
        if u1.is_nan() || u0.is_nan() {
            let r = if u1.is_nan() { r1 } else { r0 };
            return input_err(format!(
                "U is not a number at x = {} (a potential must be defined everywhere)",
                show(v, r)
            ));
        }
        if u1 == f64::INFINITY {
            continue;
        }
        let rise = u1 - u0;
        if rise.is_nan() || rise < need {
            return input_err(format!(
                "exp(−U/T) cannot be normalised: U does not rise along {} (U = {u0:.4e} at x = {}, {u1:.4e} at x = {}); a potential must grow at least like (d + 1)·T·ln|x| in every direction",
                show(v, 1.0),
                show(v, r0),
                show(v, r1)
            ));
        }
    }
    Ok(())
}
