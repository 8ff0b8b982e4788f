//! Annealing: sequential Monte Carlo from T_max down the grid and back ([`mod@crate::mcmc::smc`]),
//! the flow as its start and global moves, the system's local moves; its estimates replace the
//! failing ones, and one run of it is the witness of tempered points
//! ([`crate::sweep::checks::annealing_witness`]).

use super::importance::Estimator;
use super::{left_by_time, more};
use crate::error::Result;
use crate::estimators::{Estimate, Thermo};
use crate::flows::Flow;
use crate::mcmc::{smc, SmcConfig, SmcRun};
use crate::sweep::{checks, State, Sweeper, ESTIMATE_GROWTH};

/// Particles per replica.
pub const SMC_PARTICLES: usize = 256;
/// Independent replicas of a run.
pub const SMC_REPLICAS: usize = 16;
/// Most replicas of one run (more are pooled from further runs).
pub const SMC_MAX_RUN: usize = 128;
/// A patient run's sweeps at T_max before cooling (at least), the energy correlation its
/// kernel applications bring the particles to at each rung, and the most applications per
/// rung: a first run whose hysteresis or settled check fails is replaced by one this patient,
/// since its moves did not keep up (see `rounds`). Measured on `lj` (13 atoms, 8 temperatures
/// over [0.15, 0.4]): with [`SmcConfig::new`]'s (200, 0.3, 20) the hysteresis reached 15 and C_V
/// at the melting peak was 5 of its errors below tempering's; with these the hysteresis
/// stays ≤ 3.6 and ⟨U⟩, C_V agree with tempering within about 3 errors, for 257 s instead of
/// 72 s on 2 cores. Systems whose moves keep up never pay for it.
pub const SMC_PATIENT: (usize, f64, usize) = (2000, 0.1, 60);

/// Sequential Monte Carlo runs pooled until C_V reaches `cv_tol` at the `failing`
/// temperatures that pass their own checks (`smc_hysteresis`, `smc_settled`): each further
/// run has about R (r/tol)² · 1.2 − R more replicas (r the worst relative error, R those so
/// far; at least [`SMC_REPLICAS`], at most 3 R and [`SMC_MAX_RUN`]), within `max_samples`
/// particles per temperature (both passes) and [`ESTIMATE_GROWTH`] times the first run's
/// replicas (a step budget: the same seed gives the same run on any machine), and within
/// `estimate_seconds` where the user sets that wall-time limit. `start`: a run so far (the
/// tempered points' witness), pooled with the further ones. A first run that fails its own
/// checks at a failing temperature (at any, where none is given) is replaced by a
/// [`SMC_PATIENT`] one, whose burn-in may also last ten times longer, and the further runs are
/// as patient. As the witness of tempered points (`resolve`: their indices and estimates;
/// `failing` empty), runs are pooled instead until the anneal's errors of ⟨U⟩ and C_V are
/// within [`checks::WITNESS_RESOLUTION`] times theirs where its own checks pass, within the
/// same budgets. None when interrupted.
pub(in crate::sweep) fn rounds(
    sw: &Sweeper,
    flow: &Flow,
    failing: &[usize],
    start: Option<SmcRun>,
    resolve: &[(usize, Thermo)],
) -> Result<Option<SmcRun>> {
    let (cfg, temps) = (sw.cfg, &sw.temps);
    let mut sc = SmcConfig::new(sw.energy, temps.clone());
    sc.particles = SMC_PARTICLES;
    sc.replicas = SMC_REPLICAS;
    sc.progress = cfg.progress;
    sc.observables = cfg.observables.clone();
    let (patient_burn_in, patient_correlation, patient_repeats) = SMC_PATIENT;
    let be_patient = |sc: &mut SmcConfig| {
        sc.burn_in = patient_burn_in;
        sc.correlation = patient_correlation;
        sc.max_repeats = patient_repeats;
    };
    if start
        .as_ref()
        .is_some_and(|r| r.max_repeats == patient_repeats)
    {
        be_patient(&mut sc);
    }
    let (mut run, mut first_run, mut start) = (None::<SmcRun>, None, start);
    let go = |sc: &SmcConfig| crate::error::unless_interrupted(smc(sw.energy, flow, sc));
    for round in 0u64.. {
        sc.seed = crate::rng::derive(sw.seed, "sweep/annealing", round);
        let mut next = match start.take() {
            Some(r) => r,
            None => match go(&sc)? {
                Some(next) => next,
                None => return Ok(None),
            },
        };
        // (At the failing temperatures; at all of them for the tempered points' witness.)
        let lagging = |r: &SmcRun| {
            let lags = |i: usize| !checks::smc_sound(&r.points[i]);
            if failing.is_empty() {
                (0..r.points.len()).any(lags)
            } else {
                failing.iter().any(|&i| lags(i))
            }
        };
        if run.is_none() && next.max_repeats != patient_repeats && lagging(&next) {
            if cfg.progress {
                eprintln!(
                    "[sweep] sequential Monte Carlo: its moves did not keep up (hysteresis or settled check fails); once more with up to {patient_repeats} kernel applications per rung and {patient_burn_in} sweeps of burn-in"
                );
            }
            be_patient(&mut sc);
            sc.replicas = next.replicas;
            let seconds = next.seconds;
            next = match go(&sc)? {
                Some(next) => next,
                None => return Ok(None),
            };
            // Its time counts (the wall-time limit, the report).
            next.seconds += seconds;
        }
        let pooled = match run.take() {
            None => next,
            Some(r) => r.merge(next)?,
        };
        // Only points that pass their own checks are worth more replicas.
        let sound = |i: usize| checks::smc_sound(&pooled.points[i]);
        let refinable = failing.iter().any(|&i| sound(i));
        // The worst relative error of C_V against `--cv-tol`; as the tempered points' witness,
        // the worst ratio of its errors to theirs against the resolution (`more` takes both
        // alike).
        let (worst, tol) = if resolve.is_empty() {
            let worst = (failing.iter().filter(|&&i| sound(i)))
                .map(|&i| {
                    let cv = pooled.points[i].thermo.cv;
                    cv.se / cv.value.abs()
                })
                .fold(
                    0.0f64,
                    |a, b| if b.is_nan() { f64::INFINITY } else { a.max(b) },
                );
            (worst, cfg.cv_tol)
        } else {
            let worst = (resolve.iter().filter(|(i, _)| sound(*i)))
                .map(|(i, th)| checks::resolution(th, &pooled.points[*i].thermo))
                .fold(0.0f64, f64::max);
            (worst, Some(checks::WITNESS_RESOLUTION))
        };
        let r = pooled.replicas;
        let first = *first_run.get_or_insert(r);
        let most_by_samples = (cfg.max_samples / (2 * SMC_PARTICLES))
            .min(ESTIMATE_GROWTH * first)
            .saturating_sub(r);
        let left = most_by_samples
            .min(left_by_time(cfg.estimate_seconds, pooled.seconds, r))
            .min(SMC_MAX_RUN);
        let more = Some(more(r, worst, tol, SMC_REPLICAS, left))
            .filter(|&m| m >= 2)
            .unwrap_or(0);
        if cfg.progress && failing.is_empty() {
            eprintln!(
                "[sweep] sequential Monte Carlo: {r} replicas, {:.1} s{}",
                pooled.seconds,
                if resolve.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; its errors up to {worst:.1}× the tempered points'{}",
                        if more > 0 {
                            format!(", {more} more replicas")
                        } else {
                            String::new()
                        }
                    )
                }
            );
        } else if cfg.progress {
            eprintln!(
                "[sweep] sequential Monte Carlo: {r} replicas, worst C_V error {} at the failing temperatures that pass their own checks, {:.1} s{}",
                if refinable {
                    format!("{:.2} %", 100.0 * worst)
                } else {
                    "– (none passes)".to_string()
                },
                pooled.seconds,
                if more > 0 {
                    format!("; {more} more replicas")
                } else {
                    String::new()
                }
            );
        }
        run = Some(pooled);
        if more == 0 || crate::observe::interrupted() {
            break;
        }
        sc.replicas = more;
    }
    Ok(run)
}

/// Where temperatures still fail: sequential Monte Carlo from T_max down the grid and back
/// ([`crate::mcmc::smc`], [`SMC_REPLICAS`] replicas of [`SMC_PARTICLES`] particles, the flow
/// as its start and global moves, the system's local moves), whose estimates replace the
/// failing ones; checks are recomputed and the replacement is undone when fewer temperatures
/// are trusted after it. log Z there is the hottest trusted temperature's plus the anneal's
/// difference (not estimated when none is trusted: the flow's own log Ẑ at T_max would carry
/// whatever mass it misses).
pub(in crate::sweep) fn run(sw: &Sweeper, st: &mut State) -> Result<()> {
    let (cfg, temps) = (sw.cfg, &sw.temps);
    let failing = st.failing();
    if failing.is_empty() {
        return Ok(());
    }
    if cfg.progress {
        eprintln!(
            "[sweep] sequential Monte Carlo for {} ({} of {} temperatures fail): annealing from T = {:.3} to {:.3} and back, {SMC_REPLICAS} replicas × {SMC_PARTICLES} particles",
            checks::ranges(temps, &failing),
            failing.len(),
            temps.len(),
            temps[temps.len() - 1],
            temps[0]
        );
    }
    // The tempered points' witness, when there is one, is the anneal's first run.
    let Some(run) = rounds(sw, &st.flow, &failing, st.smc.take(), &[])? else {
        st.repairs
            .push("sequential Monte Carlo interrupted; its estimates not used".into());
        return Ok(());
    };
    let saved = st.saved();
    // log Z from the hottest trusted temperature's importance sampling plus the anneal's
    // log Z(T) − log Z(T_a); not estimated (NaN) when no temperature is trusted.
    let anchor = (0..temps.len()).rev().find(|i| !failing.contains(i));
    for &i in &failing {
        let p = &run.points[i];
        let r = &mut st.rounds;
        let mut th = p.thermo;
        let t = temps[i];
        let log_z = match anchor {
            Some(a) => {
                let (is, rel, rel_a) = (r.th[a].log_z, p.thermo.log_z, run.points[a].thermo.log_z);
                Estimate {
                    value: is.value + rel.value - rel_a.value,
                    se: (is.se.powi(2) + rel.se.powi(2) + rel_a.se.powi(2)).sqrt(),
                }
            }
            None => Estimate::NAN,
        };
        th.log_z = log_z;
        // (0 where log Z is not estimated: the other checks' combinations must stay finite.)
        th.cov[3][3] = if log_z.se.is_nan() {
            0.0
        } else {
            log_z.se.powi(2)
        };
        th.f = Estimate {
            value: -t * log_z.value,
            se: t * log_z.se,
        };
        th.s = Estimate {
            value: th.u.value / t + log_z.value,
            se: ((th.u.se / t).powi(2) + log_z.se.powi(2)).sqrt(),
        };
        r.th[i] = th;
        r.reached[i] = cfg
            .cv_tol
            .is_none_or(|tol| p.thermo.cv.se <= tol * p.thermo.cv.value.abs());
        r.method[i] = Estimator::Smc(p.clone());
    }
    st.estimate_seconds += run.seconds;
    let what = format!(
        "sequential Monte Carlo ({} replicas × {} particles, {} + {} rungs, {:.1} kernel applications per rung, flow proposals accepted {:.3}, {:.1} s) replaced the estimates at {}",
        run.replicas,
        run.particles,
        run.rungs[0],
        run.rungs[1],
        run.repeats as f64 / (run.rungs[0] + run.rungs[1]).max(1) as f64,
        run.flow_acceptance,
        run.seconds,
        crate::sweep::at(temps, &failing),
    );
    // Kept as the tempered points' witness even where its estimates are not.
    st.smc = Some(run);
    crate::sweep::settle(sw, st, saved, &what)?;
    Ok(())
}
