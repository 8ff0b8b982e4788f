//! Estimation in rounds: flow samples from the defensive mixture at each temperature, their
//! energies evaluated in parallel, PSIS-weighted estimates, and more samples where C_V has not
//! reached the tolerance (see the module docs of [`super`]).

use std::time::Instant;

use super::flow_mcmc::ChainEstimate;
use super::temper::TemperPoint;
use crate::error::{Error, Result};
use crate::estimators::{thermo, Influence, Thermo, Weights};
use crate::flows::Flow;
use crate::mcmc::SmcPoint;
use crate::observables::{evaluate, Observable};
use crate::observe::Counter;
use crate::sweep::{State, SweepConfig, Sweeper, DEFENSIVE_FRACTION, DEFENSIVE_WIDTH};
use crate::systems::Energy;

/// One temperature's accumulated samples: energies, flow log-densities and the observables'
/// values (`obs[k][i]`: observable k at sample i).
#[derive(Clone, Debug, Default)]
pub(in crate::sweep) struct Draws {
    pub(in crate::sweep) u: Vec<f64>,
    pub(in crate::sweep) log_q: Vec<f64>,
    pub(in crate::sweep) obs: Vec<Vec<f64>>,
}

impl Draws {
    pub(in crate::sweep) fn max_log_w(&self, t: f64) -> f64 {
        self.u
            .iter()
            .zip(&self.log_q)
            .map(|(u, q)| -u / t - q)
            .filter(|l| l.is_finite())
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Samples per call to the flow within a round (a multiple of [`crate::flows::flow::MAX_BATCH`],
/// so a normal base draws the same stream in chunks as in one call): progress is shown and
/// Ctrl-C looked at between them.
const DRAW_CHUNK: usize = 12 * crate::flows::flow::MAX_BATCH;

/// Draw `n` flow samples at `t`, their energies and observables (evaluated in parallel) into
/// `d`.
fn draw(
    flow: &Flow,
    energy: &dyn Energy,
    observables: &[Observable],
    t: f64,
    n: usize,
    rng: &mut crate::rng::SeededRng,
    d: &mut Draws,
) -> Result<()> {
    let s = flow.sample_mixture(n, &[t], DEFENSIVE_WIDTH, DEFENSIVE_FRACTION, rng)?;
    let dim = energy.dim();
    let x = s.x.as_standard_layout();
    let flat = x
        .as_slice()
        .ok_or_else(|| Error::Engine("samples not contiguous".into()))?;
    d.u.extend(crate::systems::parallel_energies(energy, flat, dim));
    d.log_q.extend(s.log_q);
    d.obs.resize(observables.len(), Vec::new());
    for (acc, v) in d.obs.iter_mut().zip(evaluate(observables, flat, dim, t)) {
        acc.extend(v);
    }
    Ok(())
}

/// Estimates at each temperature from `samples` flow samples (one round, no tolerance).
pub fn estimate(
    flow: &Flow,
    energy: &dyn Energy,
    temps: &[f64],
    samples: usize,
    seed: u64,
) -> Result<Vec<Thermo>> {
    temps
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let mut d = Draws::default();
            let mut rng = crate::rng::stream(seed, "estimates", i as u64);
            draw(flow, energy, &[], t, samples, &mut rng, &mut d)?;
            thermo(&d.u, &d.log_q, t)
        })
        .collect()
}

/// The outcome of the estimation rounds.
#[derive(Clone)]
pub(in crate::sweep) struct Rounds {
    pub(in crate::sweep) th: Vec<Thermo>,
    pub(in crate::sweep) draws: Vec<Draws>,
    pub(in crate::sweep) reached: Vec<bool>,
    /// Where the rounds stopped drawing because more samples cannot pass the ESS or k̂ check
    /// ([`hopeless`]).
    pub(in crate::sweep) stopped: Vec<bool>,
    /// How each temperature's ⟨U⟩ and C_V were estimated.
    pub(in crate::sweep) method: Vec<Estimator>,
    pub(in crate::sweep) seconds: f64,
}

/// How one temperature's ⟨U⟩ and C_V were estimated: the flow's importance sampling, or what
/// replaced it.
#[derive(Clone)]
pub(in crate::sweep) enum Estimator {
    /// Not yet (the first method is not importance sampling).
    Unestimated,
    /// Importance sampling from the flow.
    Importance,
    /// Flow-MCMC ([`super::flow_mcmc`]).
    FlowMcmc(ChainEstimate),
    /// Sequential Monte Carlo ([`crate::mcmc::smc`]).
    Smc(SmcPoint),
    /// Parallel tempering with flow proposals ([`super::temper`]).
    Tempering(TemperPoint),
}

impl Estimator {
    /// The name the JSON and the table use.
    pub(in crate::sweep) fn name(&self) -> &'static str {
        match self {
            Estimator::Unestimated => "none",
            Estimator::Importance => "importance",
            Estimator::FlowMcmc(_) => "flow-mcmc",
            Estimator::Smc(_) => "smc",
            Estimator::Tempering(_) => "tempering",
        }
    }
}

impl Rounds {
    /// Each temperature's ⟨O⟩ of `n` observables, `[i][o]`, by the method that estimated ⟨U⟩
    /// there and with its error model: the importance weights' self-normalised mean, flow-MCMC's
    /// chains, tempering's ladders, the anneal's replicas (NaN where nothing estimated).
    pub(in crate::sweep) fn observables(&self, n: usize) -> Result<Vec<Vec<Influence>>> {
        (self.method.iter().enumerate())
            .map(|(i, m)| match m {
                Estimator::Importance => {
                    let d = &self.draws[i];
                    let w = crate::estimators::Weights::boltzmann(&d.u, &d.log_q, self.th[i].t)?;
                    d.obs.iter().map(|o| w.influence(o)).collect()
                }
                Estimator::FlowMcmc(c) => Ok(c.observables.clone()),
                Estimator::Tempering(p) => Ok(p.observables.clone()),
                Estimator::Smc(p) => Ok(p.observables.clone()),
                Estimator::Unestimated => Ok(vec![Influence::NAN; n]),
            })
            .collect()
    }

    /// What the report says where the rounds stopped drawing because more samples cannot pass
    /// the ESS or k̂ check (None: nowhere).
    pub(in crate::sweep) fn stopped_note(&self, temps: &[f64]) -> Option<String> {
        let idx: Vec<usize> = (0..temps.len()).filter(|&i| self.stopped[i]).collect();
        (!idx.is_empty()).then(|| {
            format!(
                "importance sampling stopped drawing at {}, where more samples cannot pass the ESS or k̂ check",
                crate::sweep::at(temps, &idx)
            )
        })
    }

    /// Nothing estimated yet at `temps` (when the first method is not importance sampling):
    /// every value NaN, no samples.
    pub(in crate::sweep) fn unestimated(temps: &[f64]) -> Rounds {
        Rounds {
            th: temps.iter().map(|&t| Thermo::unestimated(t)).collect(),
            draws: vec![Draws::default(); temps.len()],
            reached: vec![false; temps.len()],
            stopped: vec![false; temps.len()],
            method: vec![Estimator::Unestimated; temps.len()],
            seconds: 0.0,
        }
    }
}

/// Whether more samples cannot make an importance estimate at `t` trusted: the ESS fraction of
/// the Pareto-smoothed weights ([`Weights::smoothed`]) under half the trusted one (the fraction
/// does not grow with samples) where the raw weights' fails too (an estimate whose check
/// passes is never left on a lucky draw), or k̂ ≥ 1 (weights without a finite mean: the
/// samples needed grow without bound). What replaces such estimates (repairs, annealing,
/// tempering) does not need them. Smoothed, because one large weight can drop the raw fraction
/// many-fold where more samples would restore it: measured on φ⁴ at L = 8 (a flow trained by
/// the sweep, 20 000 samples, 10 seeds), raw fractions 0.015–0.125 at T = 0.65 and 0.026–0.193 at 0.7, smoothed
/// 0.070–0.133 and 0.105–0.194, where 300 000 raw samples give 0.090 at 0.65; at T = 0.6
/// (0.025 from 300 000) smoothed 0.019–0.065. Before, the rule was a raw fraction under a
/// tenth, and the sweep drew up to a million samples at temperatures where the check then
/// failed and tempering replaced them: the φ⁴ L = 8 Binder sweep of docs/sweep.md took 514 s
/// (importance sampling 209 s), now 445 s (141 s), with the same table.
fn hopeless(th: &Thermo, d: &Draws, t: f64) -> Result<bool> {
    let trusted = crate::estimators::TRUST_ESS_FRACTION;
    if th.pareto_k >= 1.0 {
        return Ok(true);
    }
    if th.ess_fraction >= trusted {
        return Ok(false);
    }
    let smoothed = Weights::boltzmann(&d.u, &d.log_q, t)?.smoothed();
    Ok(smoothed.ess_fraction() < 0.5 * trusted)
}

/// Sample in rounds until C_V reaches `cv_tol` everywhere (or is [`hopeless`] there) or the
/// budget ends.
pub(in crate::sweep) fn estimate_rounds(
    flow: &Flow,
    energy: &dyn Energy,
    temps: &[f64],
    cfg: &SweepConfig,
    seed: u64,
) -> Result<Rounds> {
    let t0 = Instant::now();
    let n_t = temps.len();
    let mut draws = vec![Draws::default(); n_t];
    let mut want = vec![cfg.samples; n_t];
    let mut th: Vec<Option<Thermo>> = vec![None; n_t];
    let mut reached = vec![false; n_t];
    let mut stopped = vec![false; n_t];
    for round in 0u64.. {
        let mut bar = cfg.progress.then(|| {
            let label = format!("[sweep] round {}", round + 1);
            Counter::new(label, "samples", want.iter().sum(), 30.0)
        });
        for i in 0..n_t {
            let mut rng = crate::rng::stream(seed, "estimates", (round << 32) | i as u64);
            let mut left = want[i];
            // The first round draws everywhere (every temperature needs an estimate); later
            // ones stop at Ctrl-C between chunks.
            while left > 0 && !(round > 0 && crate::observe::interrupted()) {
                let m = left.min(DRAW_CHUNK);
                draw(
                    flow,
                    energy,
                    &cfg.observables,
                    temps[i],
                    m,
                    &mut rng,
                    &mut draws[i],
                )?;
                left -= m;
                if let Some(bar) = &mut bar {
                    bar.add(m, &format!("T = {:.4}", temps[i]));
                }
            }
            if left < want[i] {
                th[i] = Some(thermo(&draws[i].u, &draws[i].log_q, temps[i])?);
            }
        }
        let Some(tol) = cfg.cv_tol else {
            break;
        };
        let out_of_time = crate::observe::interrupted()
            || cfg
                .estimate_seconds
                .is_some_and(|s| t0.elapsed().as_secs_f64() >= s);
        for i in 0..n_t {
            let t = th[i].as_ref().expect("estimated above");
            let n = draws[i].u.len();
            let rel = t.cv.se / t.cv.value.abs();
            reached[i] = rel <= tol;
            let left = cfg.max_samples.saturating_sub(n);
            // (A temperature stopped once keeps its draws, and so its verdict.)
            stopped[i] =
                stopped[i] || (!reached[i] && !out_of_time && hopeless(t, &draws[i], temps[i])?);
            want[i] = if reached[i] || out_of_time || stopped[i] {
                0
            } else if rel.is_finite() {
                super::more(n, rel, Some(tol), n / 4, left)
            } else {
                (3 * n).min(left)
            };
        }
        let pending = want.iter().filter(|&&w| w > 0).count();
        let futile = stopped.iter().filter(|&&s| s).count();
        if cfg.progress {
            let done = reached.iter().filter(|&&r| r).count();
            let (lo, hi) = draws.iter().fold((usize::MAX, 0), |(a, b), d| {
                (a.min(d.u.len()), b.max(d.u.len()))
            });
            eprintln!(
                "[sweep] round {}: C_V within {:.2} % at {done}/{n_t} temperatures, samples {lo}–{hi}, {:.1} s{}",
                round + 1,
                100.0 * tol,
                t0.elapsed().as_secs_f64(),
                [
                    (pending > 0).then(|| format!("; drawing more at {pending}")),
                    (futile > 0).then(|| {
                        format!("; stopped at {futile} where more samples cannot pass the ESS or k̂ check")
                    }),
                ]
                .into_iter()
                .flatten()
                .collect::<String>()
            );
        }
        if pending == 0 {
            break;
        }
    }
    Ok(Rounds {
        th: th.into_iter().map(|t| t.expect("estimated")).collect(),
        draws,
        reached,
        stopped,
        method: vec![Estimator::Importance; n_t],
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The method: importance sampling in rounds at every temperature, then up to `repairs` rounds
/// of retraining where it fails.
pub(in crate::sweep) fn run(sw: &Sweeper, st: &mut State) -> Result<()> {
    let cfg = sw.cfg;
    if cfg.progress {
        eprintln!(
            "[sweep] importance sampling at {} temperatures, {} samples each to start{}",
            sw.temps.len(),
            cfg.samples,
            cfg.cv_tol
                .map(|t| format!(", until C_V is within {:.2} %", 100.0 * t))
                .unwrap_or_default()
        );
    }
    st.rounds = estimate_rounds(&st.flow, sw.energy, &sw.temps, cfg, sw.seed)?;
    st.estimate_seconds += st.rounds.seconds;
    st.repairs.extend(st.rounds.stopped_note(&sw.temps));
    sw.check(st)?;
    for r in 0..cfg.repairs {
        if crate::observe::interrupted() {
            break;
        }
        // Where only the weights' tail fails and flow-MCMC comes later, it takes those points
        // for a fraction of a retraining round's cost (φ⁴, L = 8: retraining took 131–359 s
        // and left as many temperatures trusted, or was undone, at three seeds of three).
        let failing = st.failing();
        if !failing.is_empty()
            && cfg.methods.contains(&super::Method::FlowMcmc)
            && failing == super::flow_mcmc::tail_only(st)
        {
            st.repairs.push(format!(
                "no retraining: only the weights' tail (k̂) fails, at {}, which flow-MCMC takes",
                crate::sweep::at(&sw.temps, &failing)
            ));
            break;
        }
        if !crate::sweep::retrain::retrain(sw, st, r)? {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_distr::StandardNormal;

    /// Draws at T = 1 whose log-weights are N(0, σ²) (ESS fraction e^{−σ²}), plus `outlier`
    /// added to the first.
    fn draws(sigma: f64, outlier: f64) -> (Thermo, Draws) {
        let mut rng = crate::rng::seeded(7);
        let n = 20_000;
        let u: Vec<f64> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
        let log_q: Vec<f64> = (u.iter().enumerate())
            .map(|(i, u)| {
                let lw = sigma * rng.sample::<f64, _>(StandardNormal);
                -u - lw - if i == 0 { outlier } else { 0.0 }
            })
            .collect();
        let d = Draws {
            u,
            log_q,
            obs: Vec::new(),
        };
        (thermo(&d.u, &d.log_q, 1.0).unwrap(), d)
    }

    /// One weight 3000× the typical one drops the raw ESS fraction of weights with fraction
    /// 0.37 below 0.01 (the old rule's cut), but more samples would restore it, and the
    /// smoothed weights see that; weights with fraction e^{−6.25} ≈ 0.002 are hopeless.
    #[test]
    fn one_large_weight_does_not_make_a_point_hopeless() {
        let (th, d) = draws(1.0, 8.0);
        assert!(
            th.ess_fraction < 0.01,
            "raw ESS fraction {}",
            th.ess_fraction
        );
        assert!(!hopeless(&th, &d, 1.0).unwrap());
        let (th, d) = draws(2.5, 0.0);
        assert!(hopeless(&th, &d, 1.0).unwrap());
    }
}
