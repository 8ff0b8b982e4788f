//! The sweep's estimation methods, in the order it escalates through them (`--methods`, default
//! `is,flow-mcmc,temper,anneal`): every temperature starts with the first, and each further
//! method takes the temperatures whose checks still fail. Each is checked by a witness of
//! another algorithm ([`super::checks`]).
//!
//! * `is`: importance sampling from the flow in rounds until C_V reaches `--cv-tol`, then up to
//!   `--repairs` rounds of retraining on the failing range (only with `is`: retraining is
//!   judged by the flow's own weights; none where only the weights' tail fails and
//!   `flow-mcmc` follows, which takes those points for less);
//! * `flow-mcmc`: 2048 chains of the flow's independence kernel, where only the importance
//!   weights' tail (k̂) fails (everywhere it is asked when no importance estimate exists);
//! * `temper`: parallel tempering with the flow's proposals among its moves ([`Tempering`]);
//! * `anneal`: sequential Monte Carlo down the grid and back, the flow as its start and global
//!   moves.

pub mod anneal;
pub mod flow_mcmc;
pub mod importance;
pub mod temper;

use serde::Serialize;

use crate::error::{input_err, Result};

/// One estimation method of the sweep.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Importance sampling in rounds, with retraining (`is`).
    #[serde(rename = "is")]
    Importance,
    /// Flow-MCMC (`flow-mcmc`).
    FlowMcmc,
    /// Parallel tempering with flow proposals (`temper`).
    Temper(Tempering),
    /// Sequential Monte Carlo (`anneal`).
    Anneal,
}

/// Settings of the tempering method. The defaults are the sweep's; the others exist to put the
/// method (and the witness that checks it) to the test, e.g. a ladder that cannot cross a
/// barrier.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tempering {
    /// The conditioned flow's independence proposals among the moves.
    pub flow_proposals: bool,
    /// The ladder's hottest rung, as a multiple of T_max (≥ 1; the witness's ladder: 2).
    pub hottest: f64,
    /// The ladders' starting configurations (ladder l starts at `starts[l % len]`); `None`:
    /// dispersed starts.
    pub starts: Option<Vec<Vec<f64>>>,
}

impl Default for Tempering {
    fn default() -> Self {
        Tempering {
            flow_proposals: true,
            hottest: 2.0,
            starts: None,
        }
    }
}

impl Method {
    /// The name `--methods` takes.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Importance => "is",
            Method::FlowMcmc => "flow-mcmc",
            Method::Temper(_) => "temper",
            Method::Anneal => "anneal",
        }
    }

    /// Every method in the default order, with default settings.
    pub fn all() -> Vec<Method> {
        vec![
            Method::Importance,
            Method::FlowMcmc,
            Method::Temper(Tempering::default()),
            Method::Anneal,
        ]
    }

    /// `is,flow-mcmc,temper,anneal` or any subset in any order (each at most once, `is` first
    /// where given), with default settings.
    pub fn parse_list(list: &str) -> Result<Vec<Method>> {
        let methods = list
            .split(',')
            .map(|s| {
                let s = s.trim();
                Method::all()
                    .into_iter()
                    .find(|m| m.name() == s)
                    .map_or_else(
                        || {
                            input_err(format!(
                                "unknown method {s:?} in --methods (is, flow-mcmc, temper, anneal)"
                            ))
                        },
                        Ok,
                    )
            })
            .collect::<Result<Vec<_>>>()?;
        check_list(&methods)?;
        Ok(methods)
    }
}

/// At least one method, each at most once, `is` first where given, valid tempering settings.
pub fn check_list(methods: &[Method]) -> Result<()> {
    if methods.is_empty() {
        return input_err("--methods needs at least one of is, flow-mcmc, temper, anneal");
    }
    for (i, m) in methods.iter().enumerate() {
        if methods[..i].iter().any(|o| o.name() == m.name()) {
            return input_err(format!("--methods names {} twice", m.name()));
        }
        match m {
            Method::Importance if i > 0 => {
                return input_err(
                    "--methods: is comes first where given (the other methods take what it leaves failing)",
                )
            }
            Method::Temper(t) if !(t.hottest.is_finite() && t.hottest >= 1.0) => {
                return input_err(format!(
                    "tempering's hottest rung must be at least T_max (a multiple ≥ 1), got {}",
                    t.hottest
                ))
            }
            Method::Temper(Tempering {
                starts: Some(s), ..
            }) if s.is_empty() => return input_err("tempering's starts are empty"),
            _ => {}
        }
    }
    Ok(())
}

/// Tempering and annealing pool further runs until C_V reaches the tolerance, up to this many
/// times the first run's ladder-sweeps or replicas in all (a budget in steps, so a seed fixes
/// the result on any machine; `estimate_seconds` adds a wall-time limit only where a user
/// sets one).
pub const ESTIMATE_GROWTH: usize = 4;

/// The one rule by which every method decides how much more to run: with `n` units spent so far
/// (samples, steps, ladder-sweeps, replicas) and a relative C_V error `rel`, which falls as
/// 1/√n, about n (rel/tol)² · 1.2 − n more (a 20 % margin) bring it to `tol`: at least `least`,
/// at most 3 n, within `left`. None where the tolerance is met, there is none, or `rel` is not
/// finite.
pub(crate) fn more(n: usize, rel: f64, tol: Option<f64>, least: usize, left: usize) -> usize {
    match tol {
        Some(tol) if rel > tol && rel.is_finite() => {
            let need = (n as f64 * (rel / tol).powi(2) * 1.2).ceil() as usize;
            need.saturating_sub(n)
                .clamp(least.min(3 * n), 3 * n)
                .min(left)
        }
        _ => 0,
    }
}

/// How many more units fit in the user's wall-time limit (`--estimate-seconds`; unlimited
/// without one) at the rate of the `n` run in `spent` seconds.
pub(crate) fn left_by_time(limit: Option<f64>, spent: f64, n: usize) -> usize {
    limit.map_or(usize::MAX, |budget| {
        ((budget - spent) / (spent / n.max(1) as f64)).max(0.0) as usize
    })
}

/// The names, comma-separated (as `--methods` takes them).
pub fn names(methods: &[Method]) -> String {
    methods
        .iter()
        .map(Method::name)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lists parse in the user's order and print back the same; unknown, repeated, misplaced
    /// and empty ones are refused.
    #[test]
    fn method_lists_parse_and_refuse() {
        let all = Method::parse_list("is,flow-mcmc,temper,anneal").unwrap();
        assert_eq!(all, Method::all());
        assert_eq!(names(&all), "is,flow-mcmc,temper,anneal");
        let two = Method::parse_list(" anneal , temper").unwrap();
        assert_eq!(names(&two), "anneal,temper");
        for bad in ["", "is,is", "temper,is", "hmc", "is,,anneal"] {
            assert!(Method::parse_list(bad).is_err(), "{bad:?} accepted");
        }
        let cold = Method::Temper(Tempering {
            hottest: 0.5,
            ..Tempering::default()
        });
        assert!(check_list(&[cold]).is_err());
        let empty = Method::Temper(Tempering {
            starts: Some(Vec::new()),
            ..Tempering::default()
        });
        assert!(check_list(&[empty]).is_err());
    }

    /// The pooling rule: the error's 1/√n law with a 20 % margin, capped at 3 n and by what is
    /// left; nothing once the tolerance is met, without one, or for a non-finite error.
    #[test]
    fn more_follows_the_square_root_law_within_its_caps() {
        let tol = Some(0.01);
        // 0.012 → 1000 · 1.44 · 1.2 = 1728: 728 more.
        assert_eq!(more(1000, 0.012, tol, 250, usize::MAX), 728);
        assert_eq!(more(1000, 0.0101, tol, 250, usize::MAX), 250);
        assert_eq!(more(1000, 0.05, tol, 250, usize::MAX), 3000);
        assert_eq!(more(1000, 0.05, tol, 250, 500), 500);
        for (rel, tol) in [
            (0.009, tol),
            (0.05, None),
            (f64::NAN, tol),
            (f64::INFINITY, tol),
        ] {
            assert_eq!(more(1000, rel, tol, 250, usize::MAX), 0);
        }
        assert_eq!(left_by_time(None, 10.0, 100), usize::MAX);
        assert_eq!(left_by_time(Some(30.0), 10.0, 100), 200);
        assert_eq!(left_by_time(Some(5.0), 10.0, 100), 0);
    }
}
