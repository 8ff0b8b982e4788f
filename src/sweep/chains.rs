//! Flow-MCMC at one temperature, the sweep's repair where importance weights are heavy-tailed.
//!
//! Independence Metropolis–Hastings with the sweep's estimation proposal q_mix (the flow's
//! defensive mixture): from state x a proposal x' ~ q_mix(·|T) is accepted with probability
//! min(1, w(x')/w(x)), w = e^{−U/T}/q_mix. The chain is exact whatever the tail of w; a heavy
//! tail shows as chains that stick. C independent chains start from proposal draws, run a
//! burn-in, then N steps; ⟨U⟩, C_V and dC_V/dT pool all states with equal weight, and their
//! errors treat each chain as one batch ([`crate::estimators::thermo_chains`]), which stays
//! honest when a chain sticks (its mean then stands out).

use serde::Serialize;

use super::rounds::{draw, Draws};
use crate::error::Result;
use crate::estimators::{thermo_chains, Thermo};
use crate::flows::Flow;
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
    use rand::Rng;
    let mut rng = crate::rng::seeded(seed);
    let log_w = |d: &Draws| -> Vec<f64> {
        d.u.iter()
            .zip(&d.log_q)
            .map(|(u, q)| {
                let l = -u / t - q;
                if l.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    l
                }
            })
            .collect()
    };
    let mut cur = Draws::default();
    draw(flow, energy, t, chains, seed ^ 0xc0, &mut cur)?;
    let mut lw = log_w(&cur);
    let mut series = vec![Vec::with_capacity(steps); chains];
    let mut accepted = vec![0usize; chains];
    for step in 0..burn_in + steps {
        let mut prop = Draws::default();
        draw(
            flow,
            energy,
            t,
            chains,
            seed ^ ((step as u64 + 1) << 24),
            &mut prop,
        )?;
        let lw_p = log_w(&prop);
        for c in 0..chains {
            if lw_p[c] > f64::NEG_INFINITY && rng.random::<f64>().ln() < lw_p[c] - lw[c] {
                lw[c] = lw_p[c];
                cur.u[c] = prop.u[c];
                if step >= burn_in {
                    accepted[c] += 1;
                }
            }
            if step >= burn_in {
                series[c].push(cur.u[c]);
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
