//! The independence Metropolis–Hastings kernel with a trained flow as proposal: the one global
//! move of flow-MCMC ([`mod@super::flow_mcmc`]), tempering ([`super::tempering`]), annealing
//! ([`mod@super::smc`]) and the sweep's flow-MCMC estimates.
//!
//! **Proposal.** The flow's defensive mixture q_mix(x|c) = (1 − ε) q(x|c) + ε q_s(x|c): the flow
//! with its base widened s× shares its bijection, so the mixture's exact density costs nothing
//! more ([`Flow::sample_mixture`]); with s = [`DEFENSIVE_WIDTH`], ε = [`DEFENSIVE_FRACTION`] the
//! weights stay bounded where the flow's tails are lighter than the target's.
//!
//! **Step.** With log-weights ℓ(x) = −U(x)/T − log q_mix(x|c), every walker draws x' ~ q_mix(·|c)
//! and moves there with probability min(1, e^{ℓ(x') − ℓ(x)}) (in log space). This leaves
//! p(x|T) ∝ e^{−U/T} invariant for any proposal whose support covers p: the flow's quality sets
//! only the acceptance and the autocorrelation. A proposal whose energy or density is not finite
//! is rejected; a walker whose own weight is not finite takes any finite proposal.
//!
//! Shaped as BlackJAX shapes a kernel: [`Independence::init`] (or [`Independence::start`], from
//! the proposal itself) gives the state, [`Independence::step`] moves every walker once. Each
//! walker has its own temperature T and flow condition c (one value for all, or one per walker).

use ndarray::ArrayView2;
use rand::Rng;

use crate::error::{Error, Result};
use crate::flows::Flow;
use crate::systems::{parallel_energies, Energy};

/// Base width s of the defensive component of the flow's proposal.
pub const DEFENSIVE_WIDTH: f64 = 1.2;
/// Its share ε of the proposals.
pub const DEFENSIVE_FRACTION: f64 = 0.1;
/// Proposals per walker in the pool that chains' starts are resampled from
/// ([`Walkers::resampled`]).
pub const START_POOL: usize = 8;

/// The kernel: a flow and its defensive mixture.
#[derive(Clone, Copy)]
pub struct Independence<'a> {
    /// The proposal's flow.
    pub flow: &'a Flow,
    /// Base width s of the defensive component (1: the flow alone).
    pub width: f64,
    /// Share ε of the defensive component (0: the flow alone).
    pub fraction: f64,
}

/// Walkers of the kernel: configurations (row-major, `dim` per walker), their energies and
/// log-weights ℓ = −U/T − log q_mix.
#[derive(Clone, Debug, Default)]
pub struct Walkers {
    /// Configurations, `dim` coordinates per walker.
    pub x: Vec<f64>,
    /// Energies.
    pub u: Vec<f64>,
    /// Log-weights (−∞ where not finite).
    pub log_w: Vec<f64>,
    /// Coordinates per walker.
    pub dim: usize,
}

impl Walkers {
    /// Number of walkers.
    pub fn len(&self) -> usize {
        self.u.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.u.is_empty()
    }

    /// Walker `i`'s configuration.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }

    /// `m` walkers drawn from these in proportion to their weights e^ℓ (systematic
    /// resampling): from a pool of proposals, a start close to p rather than to the proposal
    /// (sampling-importance-resampling). Each keeps its own log-weight (the kernel's ratio
    /// needs it). All weights zero: an error.
    pub fn resampled(&self, m: usize, rng: &mut impl Rng) -> Result<Walkers> {
        let top = self.log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if top == f64::NEG_INFINITY {
            return Err(Error::Input(
                "no proposal has a finite weight (non-finite energies or densities)".into(),
            ));
        }
        let w: Vec<f64> = self.log_w.iter().map(|l| (l - top).exp()).collect();
        let idx = systematic(&w, m, rng.random::<f64>());
        let mut out = Walkers {
            x: Vec::with_capacity(m * self.dim),
            u: Vec::with_capacity(m),
            log_w: Vec::with_capacity(m),
            dim: self.dim,
        };
        for i in idx {
            out.x.extend_from_slice(self.row(i));
            out.u.push(self.u[i]);
            out.log_w.push(self.log_w[i]);
        }
        Ok(out)
    }
}

/// Systematic resampling: `m` indices into `w` (non-negative weights, not all zero), index i
/// about m·w_i/Σw times, with one uniform `u` ∈ [0, 1) offsetting the comb.
pub fn systematic(w: &[f64], m: usize, u: f64) -> Vec<usize> {
    let total: f64 = w.iter().sum();
    let mut idx = Vec::with_capacity(m);
    let (mut cum, mut j) = (w[0] / total, 0);
    for k in 0..m {
        let pos = (u + k as f64) / m as f64;
        while cum <= pos && j + 1 < w.len() {
            j += 1;
            cum += w[j] / total;
        }
        idx.push(j);
    }
    idx
}

/// What one step did.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// Whether each walker moved.
    pub accepted: Vec<bool>,
    /// The proposals' log-weights (−∞ where not finite): their tail is the kernel's health
    /// (see [`crate::estimators::psis`]).
    pub proposal_log_w: Vec<f64>,
}

impl Step {
    /// Walkers that moved.
    pub fn moved(&self) -> usize {
        self.accepted.iter().filter(|&&a| a).count()
    }
}

/// −U/T − log q, or −∞ where that is not finite.
fn log_weight(u: f64, t: f64, log_q: f64) -> f64 {
    let l = -u / t - log_q;
    if l.is_finite() {
        l
    } else {
        f64::NEG_INFINITY
    }
}

/// The temperature of walker `i` (one for all, or one each).
fn temp(temps: &[f64], i: usize) -> f64 {
    if temps.len() == 1 {
        temps[0]
    } else {
        temps[i]
    }
}

impl<'a> Independence<'a> {
    /// The kernel with the defensive mixture ([`DEFENSIVE_WIDTH`], [`DEFENSIVE_FRACTION`]).
    pub fn new(flow: &'a Flow) -> Self {
        Independence {
            flow,
            width: DEFENSIVE_WIDTH,
            fraction: DEFENSIVE_FRACTION,
        }
    }

    /// The kernel with the flow alone as proposal (the `mcmc` command's flow sampler, as its
    /// peers propose).
    pub fn plain(flow: &'a Flow) -> Self {
        Independence {
            flow,
            width: 1.0,
            fraction: 0.0,
        }
    }

    fn check(&self, n: usize, temps: &[f64]) -> Result<()> {
        if temps.len() != 1 && temps.len() != n {
            return Err(Error::Input(format!(
                "{} temperatures for {n} walkers (one for all, or one each)",
                temps.len()
            )));
        }
        Ok(())
    }

    /// Walkers at configurations `x` with energies `u`: their log-weights (one inverse pass).
    pub fn init(&self, x: Vec<f64>, u: Vec<f64>, temps: &[f64], cond: &[f64]) -> Result<Walkers> {
        let dim = self.flow.dim();
        let n = u.len();
        self.check(n, temps)?;
        let view =
            ArrayView2::from_shape((n, dim), &x).map_err(|e| Error::Engine(e.to_string()))?;
        let log_q = self
            .flow
            .log_prob_mixture(view, cond, self.width, self.fraction)?;
        let log_w = (0..n)
            .map(|i| log_weight(u[i], temp(temps, i), log_q[i]))
            .collect();
        Ok(Walkers { x, u, log_w, dim })
    }

    /// `n` walkers drawn from the proposal itself, their energies evaluated in parallel.
    pub fn start(
        &self,
        e: &dyn Energy,
        n: usize,
        temps: &[f64],
        cond: &[f64],
        rng: &mut impl Rng,
    ) -> Result<Walkers> {
        self.check(n, temps)?;
        let (x, u, log_q) = self.propose(e, n, cond, rng)?;
        let log_w = (0..n)
            .map(|i| log_weight(u[i], temp(temps, i), log_q[i]))
            .collect();
        Ok(Walkers {
            x,
            u,
            log_w,
            dim: e.dim(),
        })
    }

    /// Recompute the log-weights after the configurations changed by other moves.
    pub fn refresh(&self, w: &mut Walkers, temps: &[f64], cond: &[f64]) -> Result<()> {
        let fresh = self.init(
            std::mem::take(&mut w.x),
            std::mem::take(&mut w.u),
            temps,
            cond,
        )?;
        *w = fresh;
        Ok(())
    }

    /// `n` proposals: configurations, energies (in parallel), log q_mix.
    fn propose(
        &self,
        e: &dyn Energy,
        n: usize,
        cond: &[f64],
        rng: &mut impl Rng,
    ) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        if self.flow.dim() != e.dim() {
            return Err(Error::Input(format!(
                "the flow has {} coordinates, the system {}",
                self.flow.dim(),
                e.dim()
            )));
        }
        let s = self
            .flow
            .sample_mixture(n, cond, self.width, self.fraction, rng)?;
        // Row-major whatever the array's layout (an n·d copy: nothing beside the flow's pass).
        let x: Vec<f64> = s.x.iter().copied().collect();
        let u = parallel_energies(e, &x, e.dim());
        Ok((x, u, s.log_q))
    }

    /// One independence Metropolis–Hastings step of every walker (see the module doc): the
    /// proposals in one batch, then one uniform per walker in order.
    pub fn step(
        &self,
        e: &dyn Energy,
        w: &mut Walkers,
        temps: &[f64],
        cond: &[f64],
        rng: &mut impl Rng,
    ) -> Result<Step> {
        let n = w.len();
        self.check(n, temps)?;
        let d = w.dim;
        let (x, u, log_q) = self.propose(e, n, cond, rng)?;
        let mut step = Step {
            accepted: vec![false; n],
            proposal_log_w: Vec::with_capacity(n),
        };
        for i in 0..n {
            let l = log_weight(u[i], temp(temps, i), log_q[i]);
            step.proposal_log_w.push(l);
            let take = l > f64::NEG_INFINITY
                && (w.log_w[i] == f64::NEG_INFINITY || rng.random::<f64>().ln() < l - w.log_w[i]);
            if take {
                w.x[i * d..(i + 1) * d].copy_from_slice(&x[i * d..(i + 1) * d]);
                w.u[i] = u[i];
                w.log_w[i] = l;
                step.accepted[i] = true;
            }
        }
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{linear_flow, Conditioning};

    /// For U = x²/2 the Boltzmann distribution at T is N(0, T), the untrained flow's q exactly:
    /// every weight is equal and every proposal is taken. A walker with an infinite energy takes
    /// the first finite proposal.
    /// Systematic resampling draws index i ⌊m·w_i/Σw⌋ or ⌈m·w_i/Σw⌉ times (its defining
    /// property, for any offset), zero weights never; walkers keep their own log-weights, and
    /// a pool without a finite weight is an error.
    #[test]
    fn systematic_resampling_counts_each_index_in_proportion() {
        let w = [0.0, 3.0, 0.5, 0.0, 1.2, 7.3, 0.01];
        let total: f64 = w.iter().sum();
        for u in [0.0, 0.37, 0.999] {
            let idx = systematic(&w, 50, u);
            assert_eq!(idx.len(), 50);
            for (i, &wi) in w.iter().enumerate() {
                let n = idx.iter().filter(|&&k| k == i).count() as f64;
                let want = 50.0 * wi / total;
                assert!(
                    n >= want.floor() && n <= want.ceil(),
                    "u {u} index {i}: {n} vs {want}"
                );
            }
        }
        let pool = Walkers {
            x: vec![0.0, 1.0, 2.0],
            u: vec![5.0, 6.0, 7.0],
            log_w: vec![f64::NEG_INFINITY, 0.0, 2.0_f64.ln()],
            dim: 1,
        };
        let mut rng = crate::rng::seeded(1);
        let r = pool.resampled(6, &mut rng).unwrap();
        assert_eq!((r.len(), r.dim), (6, 1));
        assert_eq!(r.x.iter().filter(|&&x| x == 2.0).count(), 4);
        assert!(r.x.iter().all(|&x| x != 0.0));
        for k in 0..6 {
            assert_eq!(r.u[k], 5.0 + r.x[k]);
            assert_eq!(r.log_w[k], pool.log_w[r.x[k] as usize]);
        }
        let dead = Walkers {
            log_w: vec![f64::NEG_INFINITY; 3],
            ..pool
        };
        assert!(dead.resampled(2, &mut rng).is_err());
    }

    #[test]
    fn an_exact_proposal_is_always_taken_and_an_invalid_walker_always_leaves() {
        let e = crate::systems::expression("0.5*x0^2", None).unwrap();
        let flow = linear_flow(
            1,
            Conditioning::Temperature {
                t_min: 0.5,
                t_max: 2.0,
            },
        )
        .unwrap();
        let k = Independence::plain(&flow);
        let mut rng = crate::rng::seeded(1);
        let temps = [0.7, 1.3, 2.0];
        let mut w = k.start(&e, 3, &temps, &temps, &mut rng).unwrap();
        w.u[2] = f64::INFINITY;
        w.log_w[2] = f64::NEG_INFINITY;
        for _ in 0..20 {
            let s = k.step(&e, &mut w, &temps, &temps, &mut rng).unwrap();
            assert_eq!(s.moved(), 3);
            let spread = s.proposal_log_w.iter().map(|l| l - s.proposal_log_w[0]);
            // Equal up to log Z(T) = ½ log(2πT), which differs between walkers.
            for (i, d) in spread.enumerate() {
                let dz = 0.5 * (temps[i] / temps[0]).ln();
                assert!((d - dz).abs() < 1e-4, "walker {i}: {d} vs {dz}");
            }
        }
        assert!(k.init(vec![0.0; 2], vec![0.0; 2], &temps, &temps).is_err());
    }
}
