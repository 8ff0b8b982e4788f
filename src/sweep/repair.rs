//! Repairs of failing temperatures (see the module docs of [`super`]): continued training with
//! forward KL on the witness's configurations and on importance-resampled flow samples,
//! flow-MCMC where only the weights' tail fails, and sequential Monte Carlo where
//! temperatures still fail.

use std::time::Instant;

use super::chains::{self, ChainEstimate};
use super::checks;
use super::model::{sweep_training, train_observed};
use super::rounds::{estimate_rounds, Estimator, Rounds};
use super::witness::Witness;
use super::{
    State, Sweeper, DEFENSIVE_FRACTION, DEFENSIVE_WIDTH, ESTIMATE_GROWTH, MCMC_CHAINS, SMC_MAX_RUN,
    SMC_PARTICLES, SMC_REPLICAS,
};
use crate::error::{Error, Result};
use crate::estimators::Estimate;
use crate::flows::Flow;
use crate::mcmc::{smc, SmcConfig, SmcRun};
use crate::systems::Energy;
use crate::train::TrainingData;

/// Sampling–importance–resampling at each of `temps`: 50 000 flow samples, 10 000 of them
/// drawn again with probability ∝ weight, so that regions the flow under-covers come back
/// in proportion to their Boltzmann mass: forward-KL data ≈ p(·|T) where the flow is weak.
fn resampled(flow: &Flow, energy: &dyn Energy, temps: &[f64], seed: u64) -> Result<TrainingData> {
    use rand::Rng;
    let t0 = Instant::now();
    let (n_draw, n_keep) = (50_000, 10_000);
    let d = energy.dim();
    let mut rows = Vec::with_capacity(temps.len() * n_keep * d);
    let mut out_t = Vec::with_capacity(temps.len() * n_keep);
    let mut rng = crate::rng::seeded(seed);
    for &t in temps {
        let s = flow.sample_mixture(n_draw, &[t], DEFENSIVE_WIDTH, DEFENSIVE_FRACTION, &mut rng)?;
        let u = energy.energies(s.x.view())?.to_vec();
        let w = crate::estimators::Weights::boltzmann(&u, &s.log_q, t)?;
        let cum: Vec<f64> = w
            .raw()
            .iter()
            .scan(0.0, |acc, v| {
                *acc += v;
                Some(*acc)
            })
            .collect();
        let total = cum[cum.len() - 1];
        for _ in 0..n_keep {
            let r = rng.random::<f64>() * total;
            let i = cum.partition_point(|c| *c < r).min(n_draw - 1);
            rows.extend(s.x.row(i).iter());
            out_t.push(t);
        }
    }
    let x = ndarray::Array2::from_shape_vec((out_t.len(), d), rows)
        .map_err(|e| Error::Engine(e.to_string()))?;
    Ok(TrainingData {
        x,
        temps: out_t,
        source: "importance-resampled flow samples".into(),
        seconds: t0.elapsed().as_secs_f64(),
        evaluations: temps.len() * n_draw,
    })
}

/// The temperature range to retrain on: the failing temperatures with one grid step either
/// side.
fn failing_range(temps: &[f64], trusted: &[bool]) -> Option<(f64, f64)> {
    let bad: Vec<usize> = (0..temps.len()).filter(|&i| !trusted[i]).collect();
    let (&first, &last) = (bad.first()?, bad.last()?);
    let lo = temps[first.saturating_sub(1)];
    let hi = temps[(last + 1).min(temps.len() - 1)];
    Some((lo, hi))
}

/// One repair round: continued training (half the training budget, lr 5·10⁻⁴) with reverse KL
/// on the failing range and forward KL (weight 2) on the witness's configurations and on
/// importance-resampled flow samples at the failing temperatures; then a fresh witness (the
/// flow has seen the old one's configurations), new estimates and checks. When fewer
/// temperatures are trusted after the round than before, the flow, witness and estimates from
/// before it are restored. Returns false (no further rounds) when no temperature fails, there
/// is no witness, or the round was undone.
pub(super) fn retrain(sw: &Sweeper, st: &mut State, r: usize) -> Result<bool> {
    let (cfg, temps) = (sw.cfg, &sw.temps);
    let trusted: Vec<bool> = st.checks.iter().map(checks::all_pass).collect();
    let Some((lo, hi)) = failing_range(temps, &trusted) else {
        return Ok(false);
    };
    let Some(mut data) = st.witness.as_ref().map(Witness::training_data) else {
        return Ok(false);
    };
    let failing: Vec<f64> = (0..temps.len())
        .filter(|&i| !trusted[i])
        .map(|i| temps[i])
        .collect();
    let sir = resampled(&st.flow, sw.energy, &failing, sw.seed ^ 0x51e)?;
    let n_sir = sir.temps.len();
    data.x = ndarray::concatenate(ndarray::Axis(0), &[data.x.view(), sir.x.view()])
        .map_err(|e| Error::Engine(e.to_string()))?;
    data.temps.extend(sir.temps);
    let n_data = data.temps.len();
    let before = trusted.iter().filter(|&&t| t).count();
    let mut tc = sweep_training(lo, hi);
    tc.seconds = cfg.train_seconds.map(|s| s / 2.0);
    tc.steps = cfg.train_steps.map(|s| (s / 2).max(1));
    if tc.seconds.is_none() && tc.steps.is_none() {
        tc.steps = Some(super::default_train_steps(sw.energy) / 2);
    }
    tc.batch = super::model::recipe_batch(sw.energy, &tc);
    tc.warm_fraction = 0.0;
    tc.forward_weight = 2.0;
    // Continued training: start where the first schedule's learning rate had come down to.
    tc.lr = 5e-4;
    tc.seed = cfg.seed.wrapping_add(100 + r as u64);
    if cfg.progress {
        eprintln!(
            "[sweep] repair {}: {} of {} temperatures fail; training on T ∈ [{lo:.3}, {hi:.3}] with the witness's configurations",
            r + 1,
            temps.len() - before,
            temps.len()
        );
    }
    // A repair must not make things worse: keep what to go back to.
    let saved = (
        st.flow.clone(),
        st.witness.clone(),
        st.rounds.clone(),
        st.checks.clone(),
        st.points.clone(),
    );
    let rep = train_observed(
        &mut st.flow,
        sw.energy,
        &tc,
        Some(data),
        cfg.progress,
        &mut st.history,
    )?;
    st.train.steps += rep.steps;
    st.train.seconds += rep.seconds;
    st.train.final_loss = rep.final_loss;
    st.witness = sw.witness(1 + r as u64)?;
    st.rounds = estimate_rounds(
        &st.flow,
        sw.energy,
        temps,
        cfg,
        sw.seed.wrapping_add(1000 * (r as u64 + 1)),
    )?;
    st.estimate_seconds += st.rounds.seconds;
    sw.check(st)?;
    let after = st.checks.iter().filter(|c| checks::all_pass(c)).count();
    let worse = after < before;
    st.repairs.push(format!(
        "continued training {} steps ({:.1} s) on T ∈ [{lo:.3}, {hi:.3}] with forward KL on {n_data} configurations (witness, and {n_sir} resampled by weight at the failing temperatures), fresh witness, re-estimated: trusted {before} → {after} of {}{}",
        rep.steps,
        rep.seconds,
        temps.len(),
        if worse {
            "; worse, so the flow and estimates from before this round are kept"
        } else {
            ""
        }
    ));
    if worse {
        (st.flow, st.witness, st.rounds, st.checks, st.points) = saved;
        return Ok(false);
    }
    Ok(true)
}

/// Where only the weights' tail checks (k̂) fail, or nothing has estimated a temperature yet,
/// flow-MCMC replaces importance sampling for ⟨U⟩ and C_V: as many proposals as importance
/// sampling drew (at least 50 per chain), then a fresh, longer run while C_V misses the
/// tolerance, within `max_samples`. log Z stays the importance-sampled one.
pub(super) fn chain_repair(sw: &Sweeper, st: &mut State) -> Result<()> {
    let (cfg, temps) = (sw.cfg, &sw.temps);
    let tail_only: Vec<usize> = (0..temps.len())
        .filter(|&i| {
            if matches!(st.rounds.method[i], Estimator::Unestimated) {
                return true;
            }
            let failing: Vec<&String> = st.checks[i]
                .iter()
                .filter(|(_, c)| !c.pass)
                .map(|(n, _)| n)
                .collect();
            !failing.is_empty()
                && failing
                    .iter()
                    .all(|n| *n == "pareto_k" || *n == "pareto_k_cv")
        })
        .collect();
    if tail_only.is_empty() {
        return Ok(());
    }
    let t0 = Instant::now();
    let most = (cfg.max_samples / MCMC_CHAINS).max(50);
    for &i in &tail_only {
        let t = temps[i];
        let mut steps = (st.rounds.draws[i].u.len() / MCMC_CHAINS).clamp(50, most);
        let ce = loop {
            if cfg.progress {
                eprintln!(
                    "[sweep] flow-MCMC at T = {t:.3}: {MCMC_CHAINS} chains × {steps} steps (heavy-tailed weights)"
                );
            }
            let ce = chains::flow_mcmc_at(
                &st.flow,
                sw.energy,
                t,
                MCMC_CHAINS,
                steps,
                20,
                sw.seed ^ 0xf10 ^ ((i as u64) << 32) ^ steps as u64,
            )?;
            let rel = ce.thermo.cv.se / ce.thermo.cv.value.abs();
            match cfg.cv_tol {
                Some(tol) if rel > tol && steps < most && rel.is_finite() => {
                    steps = ((steps as f64 * (rel / tol).powi(2) * 1.2).ceil() as usize)
                        .clamp(steps + 1, most);
                }
                _ => break ce,
            }
        };
        replace_with_chains(&mut st.rounds, i, ce, cfg.cv_tol);
    }
    let before = st.checks.iter().filter(|c| checks::all_pass(c)).count();
    sw.check(st)?;
    let after = st.checks.iter().filter(|c| checks::all_pass(c)).count();
    let secs = t0.elapsed().as_secs_f64();
    st.estimate_seconds += secs;
    st.repairs.push(format!(
        "flow-MCMC (independence Metropolis with the flow, {MCMC_CHAINS} chains) replaced importance sampling where only the weights' tail (k̂) failed, at T = {}: trusted {before} → {after} of {} ({secs:.1} s)",
        tail_only
            .iter()
            .map(|&i| format!("{:.3}", temps[i]))
            .collect::<Vec<_>>()
            .join(", "),
        temps.len()
    ));
    Ok(())
}

/// Temperature `i`'s ⟨U⟩, C_V and dC_V/dT from the chains; log Z, F and the importance
/// diagnostics from importance sampling; S from both.
fn replace_with_chains(rounds: &mut Rounds, i: usize, ce: ChainEstimate, cv_tol: Option<f64>) {
    let is = rounds.th[i];
    let t = is.t;
    let mut th = ce.thermo;
    th.log_z = is.log_z;
    th.f = is.f;
    th.s = Estimate {
        value: th.u.value / t + is.log_z.value,
        se: ((th.u.se / t).powi(2) + is.log_z.se.powi(2)).sqrt(),
    };
    th.cov[3][3] = is.cov[3][3];
    th.n_bad = is.n_bad;
    th.ess_fraction = is.ess_fraction;
    th.pareto_k = is.pareto_k;
    th.pareto_k_cv = is.pareto_k_cv;
    rounds.reached[i] = cv_tol.is_none_or(|tol| th.cv.se <= tol * th.cv.value.abs());
    rounds.th[i] = th;
    rounds.method[i] = Estimator::FlowMcmc(ce);
}

/// Sequential Monte Carlo runs pooled until C_V reaches `cv_tol` at the `failing`
/// temperatures that pass the hysteresis check: each further run has about
/// R (r/tol)² · 1.2 − R more replicas (r the worst relative error, R those so far; at least
/// [`SMC_REPLICAS`], at most 3 R and [`SMC_MAX_RUN`]), within `max_samples` particles per
/// temperature (both passes) and [`ESTIMATE_GROWTH`] times the first run's replicas (a step
/// budget: the same seed gives the same run on any machine), and within `estimate_seconds`
/// where the user sets that wall-time limit. `start`: a run so far (the tempered points'
/// witness), pooled with the further ones. None when interrupted.
pub(super) fn anneal_rounds(
    sw: &Sweeper,
    flow: &Flow,
    failing: &[usize],
    start: Option<SmcRun>,
) -> Result<Option<SmcRun>> {
    let (cfg, temps) = (sw.cfg, &sw.temps);
    let mut sc = SmcConfig::new(sw.energy, temps.clone());
    sc.particles = SMC_PARTICLES;
    sc.replicas = SMC_REPLICAS;
    sc.progress = cfg.progress;
    let (mut run, mut first_run, mut start) = (None::<SmcRun>, None, start);
    for round in 0u64.. {
        sc.seed = sw.seed ^ 0x53c0 ^ (round << 32);
        let next = match start.take() {
            Some(r) => r,
            None => match smc(sw.energy, flow, &sc) {
                Ok(next) => next,
                Err(_) if crate::observe::interrupted() => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        let pooled = match run.take() {
            None => next,
            Some(r) => r.merge(next)?,
        };
        // Only points that pass their own hysteresis check are worth more replicas.
        let refinable = failing
            .iter()
            .any(|&i| pooled.points[i].hysteresis <= checks::Z_LIMIT);
        let worst = failing
            .iter()
            .filter(|&&i| pooled.points[i].hysteresis <= checks::Z_LIMIT)
            .map(|&i| {
                let cv = pooled.points[i].thermo.cv;
                cv.se / cv.value.abs()
            })
            .fold(
                0.0f64,
                |a, b| if b.is_nan() { f64::INFINITY } else { a.max(b) },
            );
        let r = pooled.replicas;
        let first = *first_run.get_or_insert(r);
        let most_by_samples = (cfg.max_samples / (2 * SMC_PARTICLES))
            .min(ESTIMATE_GROWTH * first)
            .saturating_sub(r);
        let most_by_time = cfg.estimate_seconds.map_or(usize::MAX, |budget| {
            ((budget - pooled.seconds) / (pooled.seconds / r as f64)).max(0.0) as usize
        });
        let want = match cfg.cv_tol {
            Some(tol) if worst > tol && worst.is_finite() => {
                let need = (r as f64 * (worst / tol).powi(2) * 1.2).ceil() as usize;
                need.saturating_sub(r).clamp(SMC_REPLICAS, 3 * r)
            }
            _ => 0,
        };
        let more = Some(want.min(most_by_samples).min(most_by_time).min(SMC_MAX_RUN))
            .filter(|&m| m >= 2)
            .unwrap_or(0);
        if cfg.progress && failing.is_empty() {
            eprintln!(
                "[sweep] sequential Monte Carlo: {r} replicas, {:.1} s",
                pooled.seconds
            );
        } else if cfg.progress {
            eprintln!(
                "[sweep] sequential Monte Carlo: {r} replicas, worst C_V error {} at the failing temperatures that pass the hysteresis check, {:.1} s{}",
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
pub(super) fn anneal(sw: &Sweeper, st: &mut State) -> Result<()> {
    let (cfg, temps) = (sw.cfg, &sw.temps);
    let failing: Vec<usize> = (0..temps.len())
        .filter(|&i| !checks::all_pass(&st.checks[i]))
        .collect();
    if failing.is_empty() {
        return Ok(());
    }
    if cfg.progress {
        eprintln!(
            "[sweep] sequential Monte Carlo: {} of {} temperatures fail; annealing from T = {:.3} to {:.3} and back, {SMC_REPLICAS} replicas × {SMC_PARTICLES} particles",
            failing.len(),
            temps.len(),
            temps[temps.len() - 1],
            temps[0]
        );
    }
    // The tempered points' witness, when there is one, is the anneal's first run.
    let Some(run) = anneal_rounds(sw, &st.flow, &failing, st.smc.take())? else {
        st.repairs
            .push("sequential Monte Carlo interrupted; its estimates not used".into());
        return Ok(());
    };
    let saved = (st.rounds.clone(), st.checks.clone(), st.points.clone());
    // log Z from the hottest trusted temperature's importance sampling plus the anneal's
    // log Z(T) − log Z(T_a); not estimated (NaN) when no temperature is trusted.
    let anchor = (0..temps.len()).rev().find(|i| !failing.contains(i));
    for &i in &failing {
        let p = &run.points[i];
        let r = &mut st.rounds;
        let mut th = p.thermo;
        let (t, nan) = (temps[i], f64::NAN);
        let log_z = match anchor {
            Some(a) => {
                let (is, rel, rel_a) = (r.th[a].log_z, p.thermo.log_z, run.points[a].thermo.log_z);
                Estimate {
                    value: is.value + rel.value - rel_a.value,
                    se: (is.se.powi(2) + rel.se.powi(2) + rel_a.se.powi(2)).sqrt(),
                }
            }
            None => Estimate {
                value: nan,
                se: nan,
            },
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
        "sequential Monte Carlo ({} replicas × {} particles, {} + {} rungs, {:.1} kernel applications per rung, flow proposals accepted {:.3}, {:.1} s)",
        run.replicas,
        run.particles,
        run.rungs[0],
        run.rungs[1],
        run.repeats as f64 / (run.rungs[0] + run.rungs[1]).max(1) as f64,
        run.flow_acceptance,
        run.seconds,
    );
    st.smc = Some(run);
    if !settle(sw, st, saved, &failing, &what)? {
        // The anneal's estimates are not kept; it stays the tempered points' witness.
        sw.check(st)?;
    }
    Ok(())
}

/// What a stage that replaced the estimates at `failing` (with `saved` the rounds, checks and
/// witness points from before it) ends with: the checks recomputed, a line in the repairs
/// saying `what` did and how many temperatures are trusted before and after, and the state
/// from before restored when fewer are. Returns whether the replacement was kept.
pub(super) fn settle(
    sw: &Sweeper,
    st: &mut State,
    saved: (Rounds, Vec<checks::Checks>, Vec<checks::WitnessPoint>),
    failing: &[usize],
    what: &str,
) -> Result<bool> {
    let temps = &sw.temps;
    let before = temps.len() - failing.len();
    sw.check(st)?;
    let after = st.checks.iter().filter(|c| checks::all_pass(c)).count();
    let worse = after < before;
    st.repairs.push(format!(
        "{what} replaced the estimates at T = {}: trusted {before} → {after} of {}{}",
        failing
            .iter()
            .map(|&i| format!("{:.3}", temps[i]))
            .collect::<Vec<_>>()
            .join(", "),
        temps.len(),
        if worse {
            "; worse, so the estimates from before are kept"
        } else {
            ""
        }
    ));
    if worse {
        (st.rounds, st.checks, st.points) = saved;
    }
    Ok(!worse)
}
