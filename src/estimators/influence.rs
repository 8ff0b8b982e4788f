//! Estimates that keep their influence values, summed per independent group, so that the error
//! of any smooth function of several of them follows by the delta method:
//!
//! ```text
//! m_k = Σ_i ŵ_i O_k,i,   φ_k,g = Σ_{i ∈ g} ŵ_i (O_k,i − m_k),   se(m_k) = c √(Σ_g φ_k,g²)
//! f(m_1, …, m_K):   φ_f,g = Σ_k ∂f/∂m_k φ_k,g,   se(f) = c √(Σ_g φ_f,g²)
//! ```
//!
//! with one group per independent sample (importance sampling), per Markov chain (flow-MCMC),
//! per replica (tempering's ladders, the anneal's replicas: then c = √(R/(R − 1)), else 1). The
//! sum over k keeps the estimates' correlation: ⟨x²⟩ − ⟨x⟩² from the same samples has a smaller
//! error than the two errors would give apart. ∂f/∂m_k comes from forward-mode dual numbers, one
//! pass per estimate.

use serde::{Serialize, Serializer};

use super::Estimate;
use crate::error::{input_err, Result};
use crate::systems::Dual64;

/// An estimate with its influence values summed per independent group.
#[derive(Clone, Debug, PartialEq)]
pub struct Influence {
    /// The point estimate m.
    pub value: f64,
    /// φ_g, one per group.
    phi: Vec<f64>,
    /// c: 1, or √(R/(R − 1)) for R replicas.
    scale: f64,
}

impl Influence {
    /// Not estimated.
    pub const NAN: Influence = Influence {
        value: f64::NAN,
        phi: Vec::new(),
        scale: f64::NAN,
    };

    /// m with the per-group influence values `phi` and the error's factor `scale`.
    pub(super) fn new(value: f64, phi: Vec<f64>, scale: f64) -> Influence {
        Influence { value, phi, scale }
    }

    /// The same with the error's factor `scale`.
    pub(super) fn scaled(self, scale: f64) -> Influence {
        Influence { scale, ..self }
    }

    /// The value with its standard error c √(Σ_g φ_g²).
    pub fn estimate(&self) -> Estimate {
        if self.phi.is_empty() {
            return Estimate::NAN;
        }
        Estimate {
            value: self.value,
            se: self.scale * self.phi.iter().map(|p| p * p).sum::<f64>().sqrt(),
        }
    }

    /// f(m_1, …, m_K) of estimates made from the same samples in the same groups, with its
    /// delta-method error (module docs); NaN where any of them is not estimated. Estimates on
    /// different groups are an error: their correlation is unknown.
    pub fn combine(parts: &[&Influence], f: impl Fn(&[Dual64]) -> Dual64) -> Result<Estimate> {
        let Some(first) = parts.first() else {
            let value = f(&[]).re;
            return Ok(Estimate { value, se: 0.0 });
        };
        if parts.iter().any(|p| p.phi.is_empty()) {
            return Ok(Estimate::NAN);
        }
        let groups = first.phi.len();
        if parts
            .iter()
            .any(|p| p.phi.len() != groups || p.scale != first.scale)
        {
            return input_err("a derived quantity of estimates on different groups of samples");
        }
        let mut x: Vec<Dual64> = parts.iter().map(|p| Dual64::from_re(p.value)).collect();
        let mut phi = vec![0.0; groups];
        let mut value = f64::NAN;
        for k in 0..parts.len() {
            x[k].eps = 1.0;
            let y = f(&x);
            x[k].eps = 0.0;
            value = y.re;
            for (a, b) in phi.iter_mut().zip(&parts[k].phi) {
                *a += y.eps * b;
            }
        }
        Ok(Influence::new(value, phi, first.scale).estimate())
    }
}

impl Serialize for Influence {
    /// As its [`Estimate`]: `{"value", "se"}`.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.estimate().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimators::{influence_replicas, Weights};
    use rand::Rng;

    /// A linear f gives what the observable a·O_1 + b·O_2 gives, value and error, to rounding
    /// (the influence values are linear), for weighted samples in replicas; f = m₂ − m₁² (a
    /// variance) gets the error of the mean of (x − m₁)² − s²; unestimated parts give NaN, and
    /// parts on different groups are refused.
    #[test]
    fn derived_errors_follow_the_delta_method() {
        let mut rng = crate::rng::seeded(3);
        let n = 600;
        let x: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..2.0)).collect();
        let x2: Vec<f64> = x.iter().map(|v| v * v).collect();
        let log_w: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..0.0)).collect();
        let groups: Vec<usize> = (0..n).map(|i| i % 7).collect();
        let (a, b) = (influence_replicas(&x, &log_w, &groups, 7).unwrap(), {
            influence_replicas(&x2, &log_w, &groups, 7).unwrap()
        });
        let lin: Vec<f64> = x.iter().zip(&x2).map(|(x, y)| 2.0 * x - 0.5 * y).collect();
        let want = influence_replicas(&lin, &log_w, &groups, 7)
            .unwrap()
            .estimate();
        let got = Influence::combine(&[&a, &b], |m| m[0] * 2.0 - m[1] * 0.5).unwrap();
        assert!(
            (got.value - want.value).abs() < 1e-12,
            "{got:?} vs {want:?}"
        );
        assert!(
            (got.se / want.se - 1.0).abs() < 1e-10,
            "{got:?} vs {want:?}"
        );
        // The identity f(m) = m is the estimate itself.
        assert_eq!(Influence::combine(&[&a], |m| m[0]).unwrap(), a.estimate());

        let w = Weights::uniform(n).unwrap();
        let (m1, m2) = (w.influence(&x).unwrap(), w.influence(&x2).unwrap());
        let var = Influence::combine(&[&m1, &m2], |m| m[1] - m[0] * m[0]).unwrap();
        let mean = x.iter().sum::<f64>() / n as f64;
        let s2 = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let se = x
            .iter()
            .map(|v| ((v - mean).powi(2) - s2).powi(2))
            .sum::<f64>()
            .sqrt()
            / n as f64;
        assert!((var.value - s2).abs() < 1e-12 && (var.se / se - 1.0).abs() < 1e-10);

        let nan = Influence::combine(&[&m1, &Influence::NAN], |m| m[0] + m[1]).unwrap();
        assert!(nan.value.is_nan() && nan.se.is_nan());
        assert!(Influence::combine(&[&m1, &a], |m| m[0] + m[1]).is_err());
    }
}
