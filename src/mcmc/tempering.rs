//! Parallel tempering (replica exchange) across a temperature ladder T_1 < … < T_K.
//!
//! `n_ladders` independent ladders run in lockstep. Each sweep every replica makes one
//! random-walk Metropolis move at its own temperature (step size adapted per temperature
//! during burn-in, then frozen), then neighbouring pairs (k, k+1), alternately the even and
//! the odd ones, exchange configurations with probability
//! min(1, exp[(β_k − β_{k+1})(U_k − U_{k+1})]).
//!
//! Per temperature the run yields the energy time series of every ladder, from which ⟨U⟩ and
//! C_V = Var(U)/T² get batch-means standard errors and τ_int is reported, and thinned
//! configurations (training data for maximum likelihood).
//!
//! Moves ([`Moves`]) may be made in a system's coordinates: q' = q + s z with q = g⁻¹(x),
//! accepted with probability min(1, exp[−(U' − U)/T + ln|det ∂g/∂q'| − ln|det ∂g/∂q|]) (the
//! target in q is exp(−U(g(q))/T) |det ∂g/∂q|), or one particle at a time; exchanges are
//! unchanged.
//!
//! With a temperature-conditioned flow ([`parallel_tempering_with`]), every `flow_every`
//! sweeps each replica also makes an independence proposal x' ~ q(·|T) at its own temperature,
//! accepted with min(1, w(x')/w(x)), w = e^{−U/T}/q(x|T). Ladders run in parallel, each with
//! its own random stream.
//!
//! Ladders may start from different configurations ([`dispersed_starts`]); the run counts
//! **round trips** (a replica travelling from the coldest slot to the hottest and back), the
//! evidence that the ladder mixes between basins rather than staying where it started.

use ndarray::Array2;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use super::stats::{batch_means, tau_int};
use crate::coordinates::Coordinates;
use crate::error::{input_err, Result};
use crate::estimators::Estimate;
use crate::flows::Flow;
use crate::systems::{check_temperature, Energy};

/// Settings of a parallel-tempering run.
#[derive(Clone, Debug)]
pub struct PtConfig {
    /// Temperatures, strictly increasing.
    pub temps: Vec<f64>,
    /// Independent ladders run side by side.
    pub n_ladders: usize,
    /// Sweeps after burn-in.
    pub n_sweeps: usize,
    /// Adaptation sweeps discarded first.
    pub burn_in: usize,
    /// Keep every `thin`-th configuration per ladder and temperature.
    pub thin: usize,
    /// Initial step size.
    pub step: f64,
    /// Starting configuration for every replica (zeros when `None`), unless `starts` is given.
    pub init: Option<Vec<f64>>,
    /// Per-ladder starting configurations (ladder l starts at `starts[l % len]`); empty: `init`.
    pub starts: Vec<Vec<f64>>,
    /// RNG seed.
    pub seed: u64,
    /// Batches per ladder for batch-means errors.
    pub n_batches: usize,
    /// How a replica moves ([`Moves::for_system`] gives a system's own).
    pub moves: Moves,
    /// With a flow ([`parallel_tempering_with`]): an independence proposal from it at every
    /// temperature every this many sweeps (0: none).
    pub flow_every: usize,
}

/// The random-walk moves of a replica (Gaussian steps of the adapted size s).
#[derive(Clone, Debug, Default)]
pub enum Moves {
    /// All coordinates at once.
    #[default]
    Joint,
    /// All of a system's coordinates q = g⁻¹(x) at once: q' = q + s z, accepted with the
    /// log-Jacobian ln|det ∂g/∂q'| − ln|det ∂g/∂q|. For a chain, a change of one bond angle is
    /// a pivot move: it crosses the excluded-volume barriers Cartesian moves cannot.
    Coordinates(Coordinates),
    /// One particle (a block of this many coordinates) at a time, every particle once per
    /// sweep: in a dense cluster a joint move of every atom must be tiny to be accepted.
    Particles(usize),
}

impl Moves {
    /// A system's moves: chain coordinates for a chain, one atom at a time for a cluster,
    /// joint moves otherwise.
    pub fn for_system(e: &dyn Energy) -> Moves {
        match (e.structure(), Coordinates::for_system(e)) {
            (crate::systems::Structure::Cluster(_), _) => Moves::Particles(3),
            (_, Some(c)) => Moves::Coordinates(c),
            (_, None) => Moves::Joint,
        }
    }

    /// Moves per replica and sweep.
    pub fn blocks(&self, d: usize) -> usize {
        match self {
            Moves::Particles(b) if *b > 0 && d.is_multiple_of(*b) => d / b,
            _ => 1,
        }
    }

    /// One Metropolis sweep of a replica at state `x` with energy `u` at temperature `t`, step
    /// size `s` ([`Moves::blocks`] moves); `prop` is scratch of the state's length. Returns the
    /// number of accepted moves.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sweep(
        &self,
        e: &dyn Energy,
        x: &mut [f64],
        u: &mut f64,
        t: f64,
        s: f64,
        rng: &mut impl Rng,
        prop: &mut [f64],
    ) -> usize {
        let mut accepted = 0;
        for block in 0..self.blocks(x.len()) {
            let log_jac = self.propose(x, block, s, rng, prop);
            let un = e.energy(prop);
            if un.is_finite() && rng.random::<f64>().ln() < -(un - *u) / t + log_jac {
                x.copy_from_slice(prop);
                *u = un;
                accepted += 1;
            }
        }
        accepted
    }

    /// Write the proposal from `x` into `prop` (move number `block` of the sweep); returns the
    /// log-Jacobian term of the acceptance.
    fn propose(
        &self,
        x: &[f64],
        block: usize,
        s: f64,
        rng: &mut impl Rng,
        prop: &mut [f64],
    ) -> f64 {
        let mut gauss = || s * rng.sample::<f64, _>(StandardNormal);
        match self {
            Moves::Coordinates(co) => {
                let (mut q, ild) = co.inverse_and_log_det(x);
                q.iter_mut().for_each(|v| *v += gauss());
                let (xn, ld) = co.forward_and_log_det(&q);
                prop.copy_from_slice(&xn);
                ld + ild
            }
            Moves::Particles(b) if self.blocks(x.len()) > 1 => {
                prop.copy_from_slice(x);
                prop[block * b..(block + 1) * b]
                    .iter_mut()
                    .for_each(|v| *v += gauss());
                0.0
            }
            _ => {
                for (p, xv) in prop.iter_mut().zip(x) {
                    *p = xv + gauss();
                }
                0.0
            }
        }
    }
}

impl PtConfig {
    /// A geometric ladder of `k` temperatures from `t_min` to `t_max` with sensible defaults.
    pub fn geometric(t_min: f64, t_max: f64, k: usize) -> PtConfig {
        let temps = (0..k)
            .map(|i| t_min * (t_max / t_min).powf(i as f64 / (k.max(2) - 1) as f64))
            .collect();
        PtConfig {
            temps,
            n_ladders: 16,
            n_sweeps: 20_000,
            burn_in: 2_000,
            thin: 20,
            step: 0.5,
            init: None,
            starts: Vec::new(),
            seed: 0,
            n_batches: 16,
            moves: Moves::Joint,
            flow_every: 0,
        }
    }
}

/// Estimates at one temperature from a Markov chain.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct McThermo {
    /// Temperature.
    pub t: f64,
    /// ⟨U⟩ with batch-means error.
    pub u: Estimate,
    /// C_V = Var(U)/T² with batch-means error.
    pub cv: Estimate,
    /// Integrated autocorrelation time of U (in sweeps).
    pub tau_int: f64,
    /// Metropolis acceptance rate.
    pub acceptance: f64,
}

/// Result of a parallel-tempering run.
#[derive(Clone, Debug)]
pub struct PtRun {
    /// Temperatures.
    pub temps: Vec<f64>,
    /// Energy series: `traces[k][ladder][sweep]`.
    pub traces: Vec<Vec<Vec<f64>>>,
    /// Thinned configurations per temperature.
    pub samples: Vec<Array2<f64>>,
    /// Metropolis acceptance per temperature.
    pub acceptance: Vec<f64>,
    /// Exchange acceptance per neighbouring pair.
    pub swap_acceptance: Vec<f64>,
    /// Energy evaluations, burn-in included.
    pub energy_evaluations: usize,
    /// Completed round trips (coldest → hottest → coldest), all ladders, after burn-in.
    pub round_trips: usize,
    /// Acceptance of the flow's independence proposals, burn-in included (NaN: none made).
    pub flow_acceptance: f64,
    n_batches: usize,
}

impl PtRun {
    /// ⟨U⟩, C_V and τ_int at every temperature.
    pub fn thermo(&self) -> Vec<McThermo> {
        self.temps
            .iter()
            .zip(&self.traces)
            .zip(&self.acceptance)
            .map(|((&t, tr), &acc)| {
                let u = batch_means(tr, self.n_batches, |c| {
                    c.iter().sum::<f64>() / c.len() as f64
                });
                let mu = u.value;
                let cv = batch_means(tr, self.n_batches, |c| {
                    c.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / c.len() as f64 / (t * t)
                });
                McThermo {
                    t,
                    u,
                    cv,
                    tau_int: tau_int(tr),
                    acceptance: acc,
                }
            })
            .collect()
    }
}

/// Run parallel tempering.
pub fn parallel_tempering(e: &dyn Energy, cfg: &PtConfig) -> Result<PtRun> {
    parallel_tempering_with(e, cfg, None)
}

/// One ladder's replicas, its own random stream and what it has recorded.
struct Ladder {
    /// Configurations by slot: `x[j·d ..]` is the replica at temperature j.
    x: Vec<f64>,
    u: Vec<f64>,
    /// Replica label per slot and each replica's trip state (0 none, 1 left the coldest slot,
    /// 2 reached the hottest after that).
    label: Vec<usize>,
    trip: Vec<u8>,
    round_trips: usize,
    log_step: Vec<f64>,
    rng: crate::rng::SeededRng,
    /// `traces[j]`: energies at temperature j, one per sweep after burn-in.
    traces: Vec<Vec<f64>>,
    /// `kept[j]`: thinned configurations at temperature j, row-major.
    kept: Vec<Vec<f64>>,
    acc: Vec<usize>,
    swaps: Vec<usize>,
    tries: Vec<usize>,
    prop: Vec<f64>,
}

impl Ladder {
    fn new(start: &[f64], u0: f64, k: usize, cfg: &PtConfig, seed: u64) -> Ladder {
        let d = start.len();
        Ladder {
            x: (0..k).flat_map(|_| start.iter().copied()).collect(),
            u: vec![u0; k],
            label: (0..k).collect(),
            trip: vec![0; k],
            round_trips: 0,
            log_step: vec![cfg.step.ln(); k],
            rng: crate::rng::seeded(seed),
            traces: vec![Vec::with_capacity(cfg.n_sweeps); k],
            kept: vec![Vec::new(); k],
            acc: vec![0; k],
            swaps: vec![0; k.saturating_sub(1)],
            tries: vec![0; k.saturating_sub(1)],
            prop: vec![0.0; d],
        }
    }

    /// Sweep number `sweep` (burn-in first): a local sweep of every replica, exchanges between
    /// neighbours of alternating parity, then step adaptation (burn-in) or recording.
    fn sweep(&mut self, e: &dyn Energy, cfg: &PtConfig, sweep: usize) {
        let (k, d) = (cfg.temps.len(), self.prop.len());
        let adapting = sweep < cfg.burn_in;
        let blocks = cfg.moves.blocks(d);
        for (j, &t) in cfg.temps.iter().enumerate() {
            let s = self.log_step[j].exp();
            let xr = &mut self.x[j * d..(j + 1) * d];
            let a = cfg
                .moves
                .sweep(e, xr, &mut self.u[j], t, s, &mut self.rng, &mut self.prop);
            if adapting {
                let gamma = 1.0 / ((sweep + 10) as f64).sqrt();
                self.log_step[j] += gamma * (a as f64 / blocks as f64 - 0.3);
            } else {
                self.acc[j] += a;
            }
        }
        for j in (sweep % 2..k.saturating_sub(1)).step_by(2) {
            let delta = (1.0 / cfg.temps[j] - 1.0 / cfg.temps[j + 1]) * (self.u[j] - self.u[j + 1]);
            if !adapting {
                self.tries[j] += 1;
            }
            if self.rng.random::<f64>().ln() < delta {
                let (lo, hi) = self.x.split_at_mut((j + 1) * d);
                lo[j * d..].swap_with_slice(&mut hi[..d]);
                self.u.swap(j, j + 1);
                self.label.swap(j, j + 1);
                if !adapting {
                    self.swaps[j] += 1;
                }
            }
        }
        if adapting {
            return;
        }
        let (cold, hot) = (self.label[0], self.label[k - 1]);
        if self.trip[cold] == 2 {
            self.round_trips += 1;
        }
        self.trip[cold] = 1;
        if k > 1 && self.trip[hot] == 1 {
            self.trip[hot] = 2;
        }
        let i = sweep - cfg.burn_in;
        let keep = (i + 1).is_multiple_of(cfg.thin) && i / cfg.thin < cfg.n_sweeps / cfg.thin;
        for j in 0..k {
            self.traces[j].push(self.u[j]);
            if keep {
                self.kept[j].extend_from_slice(&self.x[j * d..(j + 1) * d]);
            }
        }
    }
}

/// Base width and share of the defensive mixture flow proposals come from.
const FLOW_MIXTURE: (f64, f64) = (1.2, 0.1);

/// An independence proposal from the flow's defensive mixture at its own temperature for every
/// replica of every ladder, accepted with min(1, w(x')/w(x)), w = e^{−U/T}/q(x|T): it leaves
/// each temperature's Boltzmann distribution invariant. Returns (accepted, proposed).
fn flow_move(
    e: &dyn Energy,
    flow: &Flow,
    temps: &[f64],
    ladders: &mut [Ladder],
    rng: &mut impl Rng,
) -> Result<(usize, usize)> {
    let (k, d) = (temps.len(), e.dim());
    let n = ladders.len() * k;
    let cond: Vec<f64> = (0..n).map(|r| temps[r % k]).collect();
    let mut x = Array2::zeros((n, d));
    for (l, lad) in ladders.iter().enumerate() {
        for j in 0..k {
            x.row_mut(l * k + j)
                .iter_mut()
                .zip(&lad.x[j * d..(j + 1) * d])
                .for_each(|(a, b)| *a = *b);
        }
    }
    let (width, frac) = FLOW_MIXTURE;
    let lq_x = flow.log_prob_mixture(x.view(), &cond, width, frac)?;
    let y = flow.sample_mixture(n, &cond, width, frac, rng)?;
    let u_y = crate::systems::parallel_energies(e, y.x.as_slice().unwrap_or(&[]), d);
    let mut accepted = 0;
    for (l, lad) in ladders.iter_mut().enumerate() {
        for (j, &t) in temps.iter().enumerate() {
            let r = l * k + j;
            let log_a = -(u_y[r] - lad.u[j]) / t + lq_x[r] - y.log_q[r];
            if u_y[r].is_finite() && log_a.is_finite() && rng.random::<f64>().ln() < log_a {
                lad.x[j * d..(j + 1) * d]
                    .iter_mut()
                    .zip(y.x.row(r))
                    .for_each(|(a, b)| *a = *b);
                lad.u[j] = u_y[r];
                accepted += 1;
            }
        }
    }
    Ok((accepted, n))
}

/// Run parallel tempering, with independence proposals from a temperature-conditioned `flow`
/// at every temperature every [`PtConfig::flow_every`] sweeps when one is given (they stop
/// when fewer than 0.5 % of the first ten rounds' are accepted). Ladders run
/// in parallel, each with its own random stream (the same seed gives the same run on any
/// number of threads).
pub fn parallel_tempering_with(
    e: &dyn Energy,
    cfg: &PtConfig,
    flow: Option<&Flow>,
) -> Result<PtRun> {
    use rayon::prelude::*;
    let (k, d, m) = (cfg.temps.len(), e.dim(), cfg.n_ladders);
    if k == 0 || m == 0 || cfg.thin == 0 || cfg.n_batches == 0 {
        return input_err("parallel tempering needs ≥ 1 temperature, ladder, thin and batch");
    }
    for &t in &cfg.temps {
        check_temperature(t)?;
    }
    if cfg.temps.windows(2).any(|w| w[1] <= w[0]) {
        return input_err("temperatures must be strictly increasing");
    }
    if let Some(f) = flow {
        if f.dim() != d {
            return input_err(format!(
                "the flow has {} coordinates, the system {d}",
                f.dim()
            ));
        }
    }
    let starts = if cfg.starts.is_empty() {
        vec![cfg.init.clone().unwrap_or_else(|| vec![0.0; d])]
    } else {
        cfg.starts.clone()
    };
    let mut u_start = Vec::with_capacity(starts.len());
    for s in &starts {
        if s.len() != d || s.iter().any(|v| !v.is_finite()) {
            return input_err(format!(
                "initial configuration must have {d} finite coordinates"
            ));
        }
        let u0 = e.energy(s);
        if !u0.is_finite() {
            return input_err("initial configuration has a non-finite energy");
        }
        u_start.push(u0);
    }
    let mut ladders: Vec<Ladder> = (0..m)
        .map(|l| {
            let s = l % starts.len();
            let seed = cfg.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(l as u64 + 1));
            Ladder::new(&starts[s], u_start[s], k, cfg, seed)
        })
        .collect();
    let total = cfg.burn_in + cfg.n_sweeps;
    let every = match flow {
        Some(_) if cfg.flow_every > 0 => cfg.flow_every,
        _ => total.max(1),
    };
    let mut rng = crate::rng::seeded(cfg.seed ^ 0xf10f);
    // Flow proposals accepted and made, and rounds of them.
    let (mut flow_acc, mut flow_tries, mut moves) = (0usize, 0usize, 0usize);
    let mut done = 0;
    while done < total {
        let chunk = every.min(total - done);
        ladders
            .par_iter_mut()
            .for_each(|lad| (done..done + chunk).for_each(|s| lad.sweep(e, cfg, s)));
        done += chunk;
        // Flow proposals stop when fewer than 0.5 % of the first ten rounds' were accepted.
        let useful = moves < 10 || flow_acc as f64 >= 0.005 * flow_tries as f64;
        if let (Some(f), true) = (flow, done < total && cfg.flow_every > 0 && useful) {
            let (a, n) = flow_move(e, f, &cfg.temps, &mut ladders, &mut rng)?;
            (flow_acc, flow_tries, moves) = (flow_acc + a, flow_tries + n, moves + 1);
        }
    }
    let kept = cfg.n_sweeps / cfg.thin;
    let samples = (0..k)
        .map(|j| {
            let rows: Vec<f64> = ladders
                .iter()
                .flat_map(|l| l.kept[j].iter().copied())
                .collect();
            Array2::from_shape_vec((m * kept, d), rows)
                .map_err(|err| crate::error::Error::Engine(err.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let blocks = cfg.moves.blocks(d);
    let sum = |f: &dyn Fn(&Ladder) -> &Vec<usize>, j: usize| -> usize {
        ladders.iter().map(|l| f(l)[j]).sum()
    };
    let acceptance = (0..k)
        .map(|j| sum(&|l| &l.acc, j) as f64 / (m * blocks * cfg.n_sweeps).max(1) as f64)
        .collect();
    let swap_acceptance = (0..k.saturating_sub(1))
        .map(|j| sum(&|l| &l.swaps, j) as f64 / sum(&|l| &l.tries, j).max(1) as f64)
        .collect();
    let round_trips = ladders.iter().map(|l| l.round_trips).sum();
    let mut traces = vec![Vec::with_capacity(m); k];
    for lad in ladders {
        for (j, tr) in lad.traces.into_iter().enumerate() {
            traces[j].push(tr);
        }
    }
    Ok(PtRun {
        temps: cfg.temps.clone(),
        traces,
        samples,
        acceptance,
        swap_acceptance,
        energy_evaluations: total * m * k * blocks + flow_tries,
        round_trips,
        flow_acceptance: if flow_tries > 0 {
            flow_acc as f64 / flow_tries as f64
        } else {
            f64::NAN
        },
        n_batches: cfg.n_batches,
    })
}

/// Starts for `n` chains: the origin for all when U(0) is finite (every built-in system but
/// those with a hard core), otherwise [`dispersed_starts`].
pub fn chain_starts(e: &dyn Energy, n: usize, rng: &mut impl Rng) -> Result<ndarray::Array2<f64>> {
    let d = e.dim();
    if e.energy(&vec![0.0; d]).is_finite() {
        return Ok(ndarray::Array2::zeros((n, d)));
    }
    let rows = dispersed_starts(e, n, rng)?;
    Ok(ndarray::Array2::from_shape_fn((n, d), |(i, j)| rows[i][j]))
}

/// `n` dispersed starting configurations: each the lowest-energy of 64 random probes, drawn
/// uniformly over the system's box when it has one, else in the system's coordinates when it has
/// them (flow coordinates from N(0, 2²): random chain shapes), else from N(0, 2²) per coordinate.
/// Errors when no probe of a start has a finite energy.
pub fn dispersed_starts(e: &dyn Energy, n: usize, rng: &mut impl Rng) -> Result<Vec<Vec<f64>>> {
    let d = e.dim();
    let bounds = e.bounds();
    let coords = Coordinates::for_system(e);
    (0..n)
        .map(|_| {
            let mut best: Option<(f64, Vec<f64>)> = None;
            for _ in 0..64 {
                let x: Vec<f64> = match (&bounds, &coords) {
                    (Some(bd), _) => bd
                        .iter()
                        .map(|(lo, hi)| rng.random_range(*lo..*hi))
                        .collect(),
                    // Random shapes in the system's coordinates (thermal at T = 4).
                    (None, Some(co)) => {
                        let y: Vec<f64> = (0..co.flow_dim())
                            .map(|_| 2.0 * rng.sample::<f64, _>(StandardNormal))
                            .collect();
                        co.to_state(&y, 4.0, &mut *rng).x
                    }
                    (None, None) => (0..d)
                        .map(|_| 2.0 * rng.sample::<f64, _>(StandardNormal))
                        .collect(),
                };
                let u = e.energy(&x);
                if u.is_finite() && best.as_ref().is_none_or(|(b, _)| u < *b) {
                    best = Some((u, x));
                }
            }
            best.map(|(_, x)| x).ok_or_else(|| {
                crate::error::Error::Input(format!(
                    "{}: no random probe has a finite energy",
                    e.name()
                ))
            })
        })
        .collect()
}
