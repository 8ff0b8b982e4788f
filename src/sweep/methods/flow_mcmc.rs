//! Flow-MCMC at one temperature, the sweep's repair where importance weights are heavy-tailed.
//!
//! The flow's independence Metropolis–Hastings kernel ([`crate::mcmc::independence`]) with the
//! sweep's estimation proposal q_mix (the flow's defensive mixture): from state x a proposal x' ~
//! q_mix(·|T) is accepted with probability min(1, w(x')/w(x)), w = e^{−U/T}/q_mix. The chain is
//! exact whatever the tail of w; a heavy tail shows as chains that stick. C independent chains
//! start from proposal draws, run a burn-in, then N steps; ⟨U⟩, C_V and dC_V/dT pool all states
//! with equal weight, and their errors treat each chain as one batch
//! ([`crate::estimators::thermo_chains`]), which stays honest when a chain sticks (its mean then
//! stands out).

use std::time::Instant;

use serde::Serialize;

use super::importance::{Estimator, Rounds};
use crate::error::Result;
use crate::estimators::{thermo_chains, Estimate, Thermo};
use crate::flows::Flow;
use crate::mcmc::Independence;
use crate::sweep::{State, Sweeper};

/// Independent chains at each temperature.
pub const MCMC_CHAINS: usize = 2048;
use crate::systems::Energy;

/// A flow-MCMC estimate and the evidence that goes with it.
#[derive(Clone, Debug, Serialize)]
pub struct ChainEstimate {
    /// ⟨U⟩, C_V, dC_V/dT with chain-batch errors (log Z is NaN).
    #[serde(skip)]
    pub thermo: Thermo,
    /// Fraction of proposals accepted after burn-in.
    pub acceptance: f64,
    /// Fraction of chains that accepted fewer than 10 % of their proposals.
    pub stuck_fraction: f64,
    /// Chains.
    pub chains: usize,
    /// Steps per chain after burn-in.
    pub steps: usize,
    /// The largest log-weight log w = −U/T − log q_mix among the start and the proposals: the
    /// witness's configurations beyond it were never proposed (`missed_mass`).
    pub max_log_weight: f64,
}

/// Run `chains` chains for `burn_in` + `steps` steps at temperature `t`.
pub fn flow_mcmc_at(
    flow: &Flow,
    energy: &dyn Energy,
    t: f64,
    chains: usize,
    steps: usize,
    burn_in: usize,
    seed: u64,
) -> Result<ChainEstimate> {
    let mut rng = crate::rng::seeded(seed);
    let kernel = Independence::new(flow);
    let mut w = kernel.start(energy, chains, &[t], &[t], &mut rng)?;
    let finite_max = |l: &[f64]| {
        l.iter()
            .copied()
            .filter(|l| l.is_finite())
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let mut max_log_weight = finite_max(&w.log_w);
    let mut series = vec![Vec::with_capacity(steps); chains];
    let mut accepted = vec![0usize; chains];
    for step in 0..burn_in + steps {
        let s = kernel.step(energy, &mut w, &[t], &[t], &mut rng)?;
        max_log_weight = max_log_weight.max(finite_max(&s.proposal_log_w));
        let moved = s.accepted;
        if step >= burn_in {
            for c in 0..chains {
                accepted[c] += moved[c] as usize;
                series[c].push(w.u[c]);
            }
        }
    }
    let thermo = thermo_chains(&series, t)?;
    let total: usize = accepted.iter().sum();
    let stuck = accepted
        .iter()
        .filter(|&&a| (a as f64) < 0.1 * steps as f64)
        .count();
    Ok(ChainEstimate {
        thermo,
        acceptance: total as f64 / (chains * steps) as f64,
        stuck_fraction: stuck as f64 / chains as f64,
        chains,
        steps,
        max_log_weight,
    })
}

/// Where only the weights' tail checks (k̂) fail, or nothing has estimated a temperature yet,
/// flow-MCMC replaces importance sampling for ⟨U⟩ and C_V: as many proposals as importance
/// sampling drew (at least 50 per chain), then a fresh, longer run while C_V misses the
/// tolerance, within `max_samples`. log Z stays the importance-sampled one.
pub(in crate::sweep) fn run(sw: &Sweeper, st: &mut State) -> Result<()> {
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
    let saved = st.saved();
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
            let ce = flow_mcmc_at(
                &st.flow,
                sw.energy,
                t,
                MCMC_CHAINS,
                steps,
                20,
                sw.seed ^ 0xf10 ^ ((i as u64) << 32) ^ steps as u64,
            )?;
            let rel = ce.thermo.cv.se / ce.thermo.cv.value.abs();
            // Not pooled but run afresh, longer: straight to the length the rule asks for, not
            // at most 4× the last (each restart pays its burn-in again).
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
    let secs = t0.elapsed().as_secs_f64();
    st.estimate_seconds += secs;
    let what = format!(
        "flow-MCMC (independence Metropolis with the flow, {MCMC_CHAINS} chains, {secs:.1} s) replaced the estimates where only the weights' tail (k̂) failed or none existed, at {}",
        crate::sweep::at(temps, &tail_only)
    );
    crate::sweep::settle(sw, st, saved, &what)?;
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
