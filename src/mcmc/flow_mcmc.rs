//! Flow-based Markov chain Monte Carlo: the flow's independence Metropolis kernel
//! ([`super::independence`], here with the flow alone as proposal, as its peers propose),
//! optionally interleaved with local HMC trajectories (a global and a local sampler in one
//! loop, as flowMC).
//!
//! With importance weights w(x) = e^{−U(x)/T}/q(x|T), a proposal x' ~ q(·|T) replaces the
//! current state x with probability min(1, w(x')/w(x)) (computed in log space). The chain is
//! exact for any q whose support covers p; the flow's quality only sets the acceptance rate
//! and the autocorrelation. Every `local_every`-th step (if > 0) is instead one HMC trajectory
//! ([`mod@super::hmc`], [`LOCAL_LEAPFROG`] leapfrog steps of a size that starts at `local_step` and
//! adapts during burn-in) for every chain, and the flow density of the moved states is then
//! evaluated in one batch. The local moves keep a chain moving where the flow's proposals are
//! seldom accepted (its weight is large there): with heavy-tailed weights (k̂ ≥ ½) the flow
//! alone sticks for stretches whose length grows with the run, and its errors do not hold
//! (8 × 8 gauge links at β = 4: τ_int grew 212 → 233 steps as the chains ran on, and the
//! plaquette ended 3.1 standard errors off). Proposals for all chains are drawn in one batch
//! per step.
//!
//! **Starts.** Each chain starts from a draw resampled by weight from [`START_POOL`] proposals
//! per chain (sampling-importance-resampling): closer to p than the proposal itself, so less of
//! the run is spent forgetting a too broad flow's draws.
//!
//! **Length.** With `max_steps` set, the same chains run on past `n_steps` until they are
//! [`super::stats::MIN_CHAIN_TAUS`] times the slowest observable's τ_int long (their length
//! doubling each time, up to `max_steps`; [`super::stats::run_on`]): batch-means errors hold
//! only for chains many τ_int long, and τ_int is known only once the chains have run. The
//! budget stays in steps: a seed fixes the result on any machine.

use super::hmc::{adapt_step, ChainRun, Leapfrog};
use super::independence::{Independence, START_POOL};
use super::stats::run_on;
use crate::error::{input_err, Result};
use crate::flows::Flow;
use crate::observe::{Observer, StepMetrics};
use crate::systems::{check_temperature, Energy};

/// Settings of a flow-MCMC run.
#[derive(Clone, Debug)]
pub struct FlowMcmcConfig {
    /// Steps per chain after burn-in.
    pub n_steps: usize,
    /// Run on past `n_steps`, up to this many steps after burn-in, until the chains are
    /// [`super::stats::MIN_CHAIN_TAUS`] τ_int long (`None`: exactly `n_steps`).
    pub max_steps: Option<usize>,
    /// Steps discarded first.
    pub burn_in: usize,
    /// Parallel chains (one batched flow call per step).
    pub n_chains: usize,
    /// Every this many steps a local HMC trajectory instead (0: never).
    pub local_every: usize,
    /// Initial leapfrog step size of the local trajectories (adapted during burn-in towards
    /// acceptance [`super::hmc::TARGET_ACCEPTANCE`]).
    pub local_step: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for FlowMcmcConfig {
    fn default() -> Self {
        FlowMcmcConfig {
            n_steps: 2000,
            max_steps: None,
            burn_in: 100,
            n_chains: 64,
            local_every: 0,
            local_step: 0.1,
            seed: 0,
        }
    }
}

/// Leapfrog steps of a local trajectory (as [`super::HmcConfig`]'s default).
pub const LOCAL_LEAPFROG: usize = 10;

/// Run flow-MCMC at temperature `t` (the flow's raw condition), recording `observe(x)` and
/// reporting every step to `observers` (acceptance so far, proposals per second).
#[allow(clippy::needless_range_loop)]
pub fn flow_mcmc(
    flow: &Flow,
    cond: &[f64],
    e: &dyn Energy,
    t: f64,
    cfg: &FlowMcmcConfig,
    observe: &dyn Fn(&[f64]) -> Vec<f64>,
    observers: &mut [&mut dyn Observer],
) -> Result<ChainRun> {
    check_temperature(t)?;
    if flow.dim() != e.dim() {
        return input_err(format!(
            "flow has dim {}, the system {}",
            flow.dim(),
            e.dim()
        ));
    }
    if cfg.n_chains == 0 {
        return input_err("flow-MCMC needs at least one chain");
    }
    if cfg.local_every > 0 && !(cfg.local_step.is_finite() && cfg.local_step > 0.0) {
        return input_err(format!(
            "flow-MCMC's local step size must be positive, not {}",
            cfg.local_step
        ));
    }
    let start = std::time::Instant::now();
    let (nc, d) = (cfg.n_chains, e.dim());
    let mut rng = crate::rng::seeded(cfg.seed);
    let kernel = Independence::plain(flow);
    let mut w = kernel
        .start(e, START_POOL * nc, &[t], cond, &mut rng)?
        .resampled(nc, &mut rng)?;
    let n_obs = observe(w.row(0)).len();
    let mut series = vec![vec![Vec::with_capacity(cfg.n_steps); nc]; n_obs];
    let (mut acc, mut tried, mut evals) = (0usize, 0usize, nc);
    let mut proposal_log_w = Vec::new();
    let mut leapfrog = Leapfrog::new(d, LOCAL_LEAPFROG);
    let (mut log_eps, mut local_steps) = (cfg.local_step.ln(), 0);
    let (mut local_acc, mut local_tried) = (0usize, 0usize);
    let mut total = cfg.burn_in + cfg.n_steps;
    let (mut it, mut event) = (0, None);
    while it < total {
        let local = cfg.local_every > 0 && it % cfg.local_every == cfg.local_every - 1;
        if local {
            let mut accepted = 0usize;
            let eps = log_eps.exp();
            for c in 0..nc {
                let x = &mut w.x[c * d..(c + 1) * d];
                if leapfrog.trajectory(e, t, x, &mut w.u[c], eps, &mut rng) {
                    accepted += 1;
                }
            }
            evals += nc * leapfrog.evaluations();
            if it < cfg.burn_in {
                log_eps = adapt_step(log_eps, accepted as f64 / nc as f64, local_steps);
            } else {
                local_tried += nc;
                local_acc += accepted;
            }
            local_steps += 1;
            // The flow weights of the new states, for the next independence step (one batch).
            if accepted > 0 {
                kernel.refresh(&mut w, &[t], cond)?;
            }
        } else {
            let step = kernel.step(e, &mut w, &[t], cond, &mut rng)?;
            evals += nc;
            if it >= cfg.burn_in {
                tried += nc;
                acc += step.moved();
                proposal_log_w.extend(step.proposal_log_w);
            }
        }
        if it >= cfg.burn_in {
            for c in 0..nc {
                for (k, o) in observe(w.row(c)).into_iter().enumerate() {
                    series[k][c].push(o);
                }
            }
        }
        if !observers.is_empty() {
            let secs = start.elapsed().as_secs_f64();
            let m = StepMetrics {
                step: it + 1,
                seconds: secs,
                progress: (it + 1) as f64 / total as f64,
                loss: f64::NAN,
                warm_start: false,
                lr: 0.0,
                ess_by_bin: Vec::new(),
                samples_per_s: ((it + 1) * nc) as f64 / secs.max(1e-9),
                bad_samples: 0,
                event: event.take().or_else(|| {
                    (it == 0 && cfg.burn_in > 0)
                        .then(|| format!("{} burn-in steps of {nc} chains", cfg.burn_in))
                }),
                acceptance: Some(acc as f64 / tried.max(1) as f64),
            };
            for o in observers.iter_mut() {
                o.observe(&m);
            }
        }
        it += 1;
        if it == total {
            if let Some((len, why)) = run_on(&series, cfg.max_steps) {
                total = cfg.burn_in + len;
                event = Some(why);
            }
        }
    }
    Ok(ChainRun {
        series,
        acceptance: acc as f64 / tried.max(1) as f64,
        energy_evaluations: evals,
        seconds: start.elapsed().as_secs_f64(),
        proposal_pareto_k: Some(crate::estimators::psis::pareto_k_of_log(&proposal_log_w)),
        local_acceptance: (local_tried > 0).then(|| local_acc as f64 / local_tried as f64),
    })
}
