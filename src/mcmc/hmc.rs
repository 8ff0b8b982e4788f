//! Hybrid (Hamiltonian) Monte Carlo, vectorised over chains (Duane et al. 1987).
//!
//! With momenta p ~ N(0, I) and H(x, p) = U(x)/T + ½|p|², a trajectory of `n_leapfrog` steps
//! of size ε (p ← p − ε/2 ∇U/T, x ← x + ε p, p ← p − ε/2 ∇U/T) is accepted with probability
//! min(1, e^{−ΔH}). During burn-in ε adapts (Robbins–Monro on log ε) towards the target
//! acceptance 0.8, then is frozen. Observables are recorded after every trajectory. With
//! `max_trajectories` set, the chains run on, their length doubling, until they are
//! [`super::stats::MIN_CHAIN_TAUS`] times the slowest observable's τ_int long
//! ([`super::stats::run_on`]).

use ndarray::Array2;
use rand::Rng;
use rand_distr::StandardNormal;

use crate::error::{input_err, Result};
use crate::systems::{check_temperature, Energy};

/// Settings of an HMC run.
#[derive(Clone, Debug)]
pub struct HmcConfig {
    /// Trajectories after burn-in.
    pub n_trajectories: usize,
    /// Run on past `n_trajectories`, up to this many, until the chains are
    /// [`super::stats::MIN_CHAIN_TAUS`] τ_int long (`None`: exactly `n_trajectories`).
    pub max_trajectories: Option<usize>,
    /// Adaptation trajectories discarded first.
    pub burn_in: usize,
    /// Leapfrog steps per trajectory.
    pub n_leapfrog: usize,
    /// Initial step size.
    pub step: f64,
    /// Parallel chains.
    pub n_chains: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for HmcConfig {
    fn default() -> Self {
        HmcConfig {
            n_trajectories: 5000,
            max_trajectories: None,
            burn_in: 500,
            n_leapfrog: 10,
            step: 0.1,
            n_chains: 8,
            seed: 0,
        }
    }
}

/// Result of a Markov chain run with recorded observables.
#[derive(Clone, Debug)]
pub struct ChainRun {
    /// `series[k][chain][t]`: observable k after step t of each chain.
    pub series: Vec<Vec<Vec<f64>>>,
    /// Acceptance rate after burn-in.
    pub acceptance: f64,
    /// Energy (or gradient) evaluations, burn-in included.
    pub energy_evaluations: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Flow-MCMC: the PSIS k̂ of its proposals' weights after burn-in (above ½ their variance is
    /// infinite: the chains seldom reach where the flow is too thin, and finite runs miss it);
    /// None for the other samplers.
    pub proposal_pareto_k: Option<f64>,
    /// Flow-MCMC with local HMC moves: their acceptance after burn-in (None without them).
    pub local_acceptance: Option<f64>,
}

/// Run HMC at temperature `t` from `x0` (one row per chain), recording `observe(x)`.
pub fn hmc(
    e: &dyn Energy,
    t: f64,
    x0: &Array2<f64>,
    cfg: &HmcConfig,
    observe: &dyn Fn(&[f64]) -> Vec<f64>,
) -> Result<ChainRun> {
    check_temperature(t)?;
    crate::systems::check_batch(e.dim(), &x0.view())?;
    if cfg.n_leapfrog == 0 || cfg.step.is_nan() || cfg.step <= 0.0 {
        return input_err("HMC needs n_leapfrog ≥ 1 and step > 0");
    }
    let start = std::time::Instant::now();
    let (nc, d) = x0.dim();
    let mut rng = crate::rng::seeded(cfg.seed);
    let mut x: Vec<Vec<f64>> = x0.rows().into_iter().map(|r| r.to_vec()).collect();
    let mut u: Vec<f64> = x.iter().map(|xi| e.energy(xi)).collect();
    if let Some(k) = u.iter().position(|v| !v.is_finite()) {
        return input_err(format!(
            "HMC: chain {k} starts where U = {} (start from a finite energy)",
            u[k]
        ));
    }
    let mut log_eps = cfg.step.ln();
    let n_obs = observe(&x[0]).len();
    let mut series = vec![vec![Vec::with_capacity(cfg.n_trajectories); nc]; n_obs];
    let (mut acc, mut evals) = (0usize, 0usize);
    let mut leapfrog = Leapfrog::new(d, cfg.n_leapfrog);
    let (mut it, mut total) = (0, cfg.burn_in + cfg.n_trajectories);
    while it < total {
        let eps = log_eps.exp();
        let mut acc_now = 0usize;
        for c in 0..nc {
            if leapfrog.trajectory(e, t, &mut x[c], &mut u[c], eps, &mut rng) {
                acc_now += 1;
            }
            evals += leapfrog.evaluations();
            if it >= cfg.burn_in {
                for (k, o) in observe(&x[c]).into_iter().enumerate() {
                    series[k][c].push(o);
                }
            }
        }
        if it < cfg.burn_in {
            log_eps = adapt_step(log_eps, acc_now as f64 / nc as f64, it);
        } else {
            acc += acc_now;
        }
        it += 1;
        if it == total {
            if let Some((len, _)) = super::stats::run_on(&series, cfg.max_trajectories) {
                total = cfg.burn_in + len;
            }
        }
    }
    Ok(ChainRun {
        series,
        acceptance: acc as f64 / ((total - cfg.burn_in) * nc).max(1) as f64,
        energy_evaluations: evals,
        seconds: start.elapsed().as_secs_f64(),
        proposal_pareto_k: None,
        local_acceptance: None,
    })
}

/// Robbins–Monro on log ε towards the acceptance [`TARGET_ACCEPTANCE`], after the `it`-th
/// adaptation step with acceptance `acc`.
pub(crate) fn adapt_step(log_eps: f64, acc: f64, it: usize) -> f64 {
    log_eps + (acc - TARGET_ACCEPTANCE) / ((it + 10) as f64).sqrt()
}

/// The acceptance the step size adapts to.
pub const TARGET_ACCEPTANCE: f64 = 0.8;

/// HMC trajectories of `n` leapfrog steps, with their scratch space (the moved state, the
/// momenta and the gradient).
pub(crate) struct Leapfrog {
    n: usize,
    xn: Vec<f64>,
    p: Vec<f64>,
    g: Vec<f64>,
}

impl Leapfrog {
    pub(crate) fn new(dim: usize, n: usize) -> Self {
        Leapfrog {
            n,
            xn: vec![0.0; dim],
            p: vec![0.0; dim],
            g: vec![0.0; dim],
        }
    }

    /// Energy and gradient evaluations per trajectory: `n` + 1 gradients and one energy.
    pub(crate) fn evaluations(&self) -> usize {
        self.n + 1
    }

    /// One trajectory of leapfrog steps of size `eps` from `x` (energy `u`) with fresh momenta,
    /// accepted with probability min(1, e^{−ΔH}): `x` and `u` move when it is.
    pub(crate) fn trajectory(
        &mut self,
        e: &dyn Energy,
        t: f64,
        x: &mut [f64],
        u: &mut f64,
        eps: f64,
        rng: &mut impl Rng,
    ) -> bool {
        let (xn, p, g) = (&mut self.xn, &mut self.p, &mut self.g);
        for v in p.iter_mut() {
            *v = rng.sample(StandardNormal);
        }
        let h0 = *u / t + 0.5 * p.iter().map(|v| v * v).sum::<f64>();
        xn.copy_from_slice(x);
        e.energy_grad(xn, g);
        for _ in 0..self.n {
            for k in 0..xn.len() {
                p[k] -= 0.5 * eps * g[k] / t;
                xn[k] += eps * p[k];
            }
            e.energy_grad(xn, g);
            for k in 0..xn.len() {
                p[k] -= 0.5 * eps * g[k] / t;
            }
        }
        let un = e.energy(xn);
        let h1 = un / t + 0.5 * p.iter().map(|v| v * v).sum::<f64>();
        let accept = h1.is_finite() && rng.random::<f64>().ln() < h0 - h1;
        if accept {
            x.copy_from_slice(xn);
            *u = un;
        }
        accept
    }
}

/// HMC states at temperature `t`: every chain's state after each post-burn-in trajectory,
/// chain-major (`n_chains` × the trajectories run after burn-in rows), with the energy
/// evaluations spent.
pub fn hmc_samples(
    e: &dyn Energy,
    t: f64,
    x0: &Array2<f64>,
    cfg: &HmcConfig,
) -> Result<(Array2<f64>, usize)> {
    let run = hmc(e, t, x0, cfg, &|x: &[f64]| x.to_vec())?;
    let n = run
        .series
        .first()
        .and_then(|s| s.first())
        .map_or(0, Vec::len);
    let (nc, d) = (x0.nrows(), e.dim());
    let mut out = Array2::zeros((nc * n, d));
    for (k, series) in run.series.iter().enumerate() {
        for (c, chain) in series.iter().enumerate() {
            for (s, &v) in chain.iter().enumerate() {
                out[[c * n + s, k]] = v;
            }
        }
    }
    Ok((out, run.energy_evaluations))
}
