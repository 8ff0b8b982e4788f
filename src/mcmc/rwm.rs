//! Random-walk Metropolis, vectorised over chains: x' = x + s·ξ, ξ ~ N(0, I), accepted with
//! probability min(1, exp(−(U(x') − U(x))/T)). During burn-in each chain adapts its step
//! s by Robbins–Monro on log s towards the target acceptance (default 0.3); after burn-in s is
//! frozen so the chain is a proper Markov chain. A proposal whose energy is not finite is
//! rejected.

use ndarray::{Array2, ArrayView2};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{input_err, Result};
use crate::systems::{check_batch, check_temperature, Energy};

/// Settings of a random-walk Metropolis run.
#[derive(Clone, Debug)]
pub struct RwmConfig {
    /// Steps after burn-in.
    pub n_steps: usize,
    /// Adaptation steps discarded first.
    pub burn_in: usize,
    /// Keep every `thin`-th configuration.
    pub thin: usize,
    /// Initial step size.
    pub step: f64,
    /// Target acceptance rate during adaptation.
    pub target_accept: f64,
    /// RNG seed.
    pub seed: u64,
}

impl Default for RwmConfig {
    fn default() -> Self {
        RwmConfig {
            n_steps: 10_000,
            burn_in: 2_000,
            thin: 10,
            step: 0.5,
            target_accept: 0.3,
            seed: 0,
        }
    }
}

/// Result of a random-walk Metropolis run.
#[derive(Clone, Debug)]
pub struct RwmRun {
    /// Temperature.
    pub t: f64,
    /// Kept configurations (chain-major: all kept states of chain 0, then chain 1, …).
    pub samples: Array2<f64>,
    /// Energies of the kept configurations.
    pub energies: Vec<f64>,
    /// Energy after every post-burn-in step, per chain.
    pub traces: Vec<Vec<f64>>,
    /// Fraction of accepted proposals after burn-in.
    pub acceptance: f64,
    /// Final step size per chain.
    pub steps: Vec<f64>,
    /// Energy evaluations, burn-in included.
    pub energy_evaluations: usize,
}

/// Run one chain per row of `x0` at temperature `t`.
pub fn rwm(e: &dyn Energy, t: f64, x0: ArrayView2<f64>, cfg: &RwmConfig) -> Result<RwmRun> {
    check_temperature(t)?;
    check_batch(e.dim(), &x0)?;
    if cfg.thin == 0 || cfg.step.is_nan() || cfg.step <= 0.0 {
        return input_err("thin must be ≥ 1 and step > 0");
    }
    let (nc, d) = x0.dim();
    let mut rng = crate::rng::seeded(cfg.seed);
    let mut x = x0.to_owned();
    let mut u: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|r| e.energy(&r.to_vec()))
        .collect();
    if u.iter().any(|v| !v.is_finite()) {
        return input_err("initial configuration has a non-finite energy");
    }
    let mut log_step = vec![cfg.step.ln(); nc];
    let mut traces = vec![Vec::with_capacity(cfg.n_steps); nc];
    let kept_per_chain = cfg.n_steps / cfg.thin;
    let mut samples = Array2::zeros((nc * kept_per_chain, d));
    let mut energies = vec![0.0; nc * kept_per_chain];
    let mut prop = vec![0.0; d];
    let mut accepted = 0usize;
    for step in 0..cfg.burn_in + cfg.n_steps {
        let adapting = step < cfg.burn_in;
        for c in 0..nc {
            let s = log_step[c].exp();
            for k in 0..d {
                let z: f64 = rng.sample(StandardNormal);
                prop[k] = x[[c, k]] + s * z;
            }
            let un = e.energy(&prop);
            let acc = un.is_finite() && rng.random::<f64>().ln() < -(un - u[c]) / t;
            if acc {
                for k in 0..d {
                    x[[c, k]] = prop[k];
                }
                u[c] = un;
            }
            if adapting {
                let gamma = 1.0 / ((step + 10) as f64).sqrt();
                log_step[c] = super::clamp_log_step(
                    log_step[c] + gamma * (if acc { 1.0 } else { 0.0 } - cfg.target_accept),
                );
            } else {
                accepted += acc as usize;
                traces[c].push(u[c]);
                let i = step - cfg.burn_in;
                if (i + 1).is_multiple_of(cfg.thin) && i / cfg.thin < kept_per_chain {
                    let row = c * kept_per_chain + i / cfg.thin;
                    samples.row_mut(row).assign(&x.row(c));
                    energies[row] = u[c];
                }
            }
        }
    }
    Ok(RwmRun {
        t,
        samples,
        energies,
        traces,
        acceptance: accepted as f64 / (cfg.n_steps * nc).max(1) as f64,
        steps: log_step.iter().map(|l| l.exp()).collect(),
        energy_evaluations: (cfg.burn_in + cfg.n_steps) * nc,
    })
}
