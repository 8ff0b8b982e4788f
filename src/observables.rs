//! Observables: functions O(x) of a configuration whose Boltzmann average
//!
//! ```text
//! ⟨O⟩(T) = ∫ O(x) e^{−U(x)/T} dx / Z(T)
//! ```
//!
//! a sweep estimates at every temperature beside ⟨U⟩, from the same samples and with the same
//! error model as ⟨U⟩: importance sampling's self-normalised mean Σ w_i O_i / Σ w_i with its
//! delta-method error, flow-MCMC's equal-weight mean over its chains with one batch per chain
//! ([`crate::estimators::Weights::mean_grouped`]). An observable is a Rust closure on the
//! coordinates ([`Observable::new`]) or an expression typed as text, the grammar of
//! `--energy` ([`Observable::parse`]: `x0`, `r2 = x0^2 + x1^2`).

use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{input_err, Result};
use crate::systems::expression::Expression;

type Closure = dyn Fn(&[f64]) -> f64 + Send + Sync;

/// A named function of a configuration.
#[derive(Clone)]
pub struct Observable {
    name: String,
    f: Arc<Closure>,
    /// Coordinates it reads, where known (an expression's highest index plus one).
    reads: Option<usize>,
}

impl std::fmt::Debug for Observable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observable({:?})", self.name)
    }
}

impl Observable {
    /// The observable `name` computed by `f` from a configuration's coordinates:
    /// `Observable::new("r²", |x| x[0] * x[0] + x[1] * x[1])`.
    pub fn new(name: &str, f: impl Fn(&[f64]) -> f64 + Send + Sync + 'static) -> Observable {
        Observable {
            name: name.trim().to_string(),
            f: Arc::new(f),
            reads: None,
        }
    }

    /// `EXPR` or `NAME=EXPR`, EXPR in `x0, x1, …` as `--energy` takes it (named by its text
    /// when no name is given): `x0`, `x0^2`, `r = sqrt(x0^2 + x1^2)`.
    pub fn parse(text: &str) -> Result<Observable> {
        let (name, expr) = match text.split_once('=') {
            Some((n, e)) => (n.trim(), e.trim()),
            None => (text.trim(), text.trim()),
        };
        if name.is_empty() {
            return input_err(format!("observable {text:?} has no name before '='"));
        }
        let e = Expression::parse(expr).map_err(|e| e.context(format!("observable {name:?}")))?;
        let reads = e.coordinates();
        let mut o = Observable::new(name, move |x: &[f64]| e.eval(x));
        o.reads = Some(reads);
        Ok(o)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// O(x).
    pub fn eval(&self, x: &[f64]) -> f64 {
        (self.f)(x)
    }
}

/// Names that are present, distinct and not `T`, and expressions that read only coordinates
/// below `dim`.
pub fn check(obs: &[Observable], dim: usize) -> Result<()> {
    for (i, o) in obs.iter().enumerate() {
        if o.name.is_empty() || o.name == "T" {
            return input_err(format!(
                "an observable needs a name other than {:?}",
                o.name
            ));
        }
        if obs[..i].iter().any(|p| p.name == o.name) {
            return input_err(format!("two observables are named {:?}", o.name));
        }
        if let Some(r) = o.reads.filter(|&r| r > dim) {
            return input_err(format!(
                "observable {:?} uses x{} but the system has {dim} coordinates",
                o.name,
                r - 1
            ));
        }
    }
    Ok(())
}

/// Every observable at every row of `flat` (rows of `dim` coordinates), in parallel:
/// `values[k][i]` is observable k at row i.
pub fn evaluate(obs: &[Observable], flat: &[f64], dim: usize) -> Vec<Vec<f64>> {
    obs.iter()
        .map(|o| flat.par_chunks(dim).map(|x| o.eval(x)).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names and expressions parse; a missing name, a repeated one, `T`, a coordinate the
    /// system lacks and a bad expression are refused with what is wrong.
    #[test]
    fn observables_parse_and_are_checked() {
        let r = Observable::parse(" r2 = x0^2 + x1^2 ").unwrap();
        assert_eq!(r.name(), "r2");
        assert_eq!(r.eval(&[3.0, 4.0]), 25.0);
        let x = Observable::parse("x1").unwrap();
        assert_eq!(x.name(), "x1");
        let v = evaluate(&[r.clone(), x.clone()], &[1.0, 2.0, 3.0, 4.0], 2);
        assert_eq!(v, vec![vec![5.0, 25.0], vec![2.0, 4.0]]);
        assert!(check(&[r.clone(), x.clone()], 2).is_ok());
        let err = |r: Result<()>| r.unwrap_err().to_string();
        assert!(err(check(std::slice::from_ref(&x), 1)).contains("uses x1"));
        assert!(err(check(&[r.clone(), r.clone()], 2)).contains("two observables"));
        assert!(check(&[Observable::new("T", |x| x[0])], 1).is_err());
        assert!(Observable::parse("=x0").is_err());
        assert!(Observable::parse("m = x0 +").is_err());
        let c = Observable::new("closure", |x| x[0] - x[1]);
        assert_eq!(c.eval(&[1.0, 3.0]), -2.0);
        assert!(
            check(&[c], 1).is_ok(),
            "a closure's reach is not known in advance"
        );
    }
}
