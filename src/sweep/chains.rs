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

use serde::Serialize;

use crate::error::Result;
use crate::estimators::{thermo_chains, Thermo};
use crate::flows::Flow;
use crate::mcmc::Independence;
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
    let mut series = vec![Vec::with_capacity(steps); chains];
    let mut accepted = vec![0usize; chains];
    for step in 0..burn_in + steps {
        let moved = kernel.step(energy, &mut w, &[t], &[t], &mut rng)?.accepted;
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
    })
}
