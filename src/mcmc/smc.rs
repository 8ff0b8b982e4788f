//! Sequential Monte Carlo down a temperature ladder and back up, with the conditioned flow as
//! its start and its global moves (annealed importance sampling with resampling and MCMC
//! moves; Neal 2001, Del Moral, Doucet & Jasra 2006).
//!
//! R independent replicas of N particles. Each starts at T_max from flow draws
//! x_i ~ q(·|T_max) with log-weights ℓ_i = −U_i/T_max − log q(x_i|T_max) and
//! log Ẑ = log (1/N) Σ e^{ℓ_i}. A step from β to β' multiplies every weight by the
//! incremental weight e^{−(β'−β) U_i} and adds log Σ_i W_i e^{−(β'−β) U_i} to log Ẑ (W the
//! normalised weights). The next β' is the one whose conditional ESS
//!
//! ```text
//! CESS = (Σ W_i e^{−Δβ U_i})² / Σ W_i e^{−2Δβ U_i}
//! ```
//!
//! equals `cess` (on average over the replicas, found by bisection), never beyond the next
//! requested temperature, so every requested temperature is a rung. A replica whose ESS falls
//! below N/2 is resampled (systematic). At every rung the kernel is applied m times: each
//! particle makes one independence proposal from the flow's defensive mixture at T' (accepted
//! with min(1, w(x')/w(x)), w = e^{−U/T'}/q_mix(x|T')) and `sweeps` Metropolis sweeps with the
//! system's local moves ([`Moves`], step adapted per replica toward acceptance 0.3); both leave
//! p(·|T') invariant, so the weighted particles keep targeting it. m is planned from the
//! previous rung (enough applications to bring the correlation of the particles' energies with
//! their energies before to `correlation`), never from the rung's own outcome. Flow proposals
//! stop once fewer than 0.5 % have been accepted after the first rungs (the kernel stays exact
//! either way). At T_max the flow's draws are resampled and burnt in first.
//!
//! At T_min a copy of the particles dwells as they were burnt in at T_max, and the ladder is
//! climbed back to T_max the same way from the particles as they arrived. At each requested
//! temperature:
//! * ⟨U⟩, C_V, dC_V/dT pool both passes (half each); within a pass replica r counts in
//!   proportion to its path factor Ẑ_r(T)/Ẑ_r(start) (the start: T_max after burn-in for
//!   cooling, T_min for heating), which makes the pass's estimate a ratio of unbiased sums over
//!   all R·N particles (bias O(1/(RN)), not the O(1/N) of averaging each replica's own ratio).
//!   Errors sum influence values per replica ([`crate::estimators::thermo_replicas`], scaled by
//!   R/(R − 1)): a replica's particles and passes are correlated through resampling, the
//!   replicas are independent;
//! * observables ([`SmcConfig::observables`]) as ⟨U⟩: both passes, the same weights, errors
//!   from the replicas ([`crate::estimators::mean_replicas`]), and in the hysteresis below;
//! * log Z(T) − log Z(T_max) from the cooling pass: log (1/R) Σ_r Ẑ_r(T)/Ẑ_r(T_max), se =
//!   sd/(√(R − 1) · mean) of those ratios (F and S, which need log Z(T_max), are NaN);
//! * **hysteresis**: |mean_r d_r| / (sd(d_r)/√R), d_r = ⟨U⟩_cool,r − ⟨U⟩_heat,r. Moves that do
//!   not equilibrate between rungs leave the cooling pass hotter than the heating pass; the
//!   two agree within their replica spread when the kernel keeps up. At T_min the heating
//!   pass's record is the copy after its dwell, so a cooling pass that arrives there lagging
//!   shows as well. With observables, the largest of ⟨U⟩'s and theirs;
//! * **settled** ([`SmcPoint::settled`]): the burn-in both passes descend from (at T_min also
//!   the dwell) stopped because the mean energy stopped drifting, not at its cap of
//!   20 × `burn_in` sweeps; a relaxation cut short there is carried by both passes, where the
//!   hysteresis cannot see it.
//!
//! The ladder is shared by the replicas (chosen from all of them), which couples them only
//! through the rung positions.

use std::time::Instant;

use rand::Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::independence::Independence;
use super::stats::{mser, paired_t};
use super::Moves;
use crate::error::{input_err, Result};
use crate::estimators::{
    influence_replicas, thermo_replicas, Estimate, Influence, Thermo, Weights,
};
use crate::flows::Flow;
use crate::observables::{evaluate, Observable};
use crate::systems::{check_temperature, Energy};

/// Most rungs of one pass before the run gives up.
const MAX_RUNGS: usize = 20_000;

/// Settings of a sequential Monte Carlo run.
#[derive(Clone, Debug)]
pub struct SmcConfig {
    /// Requested temperatures (strictly increasing); the run starts at the last.
    pub temps: Vec<f64>,
    /// Particles per replica.
    pub particles: usize,
    /// Independent replicas (≥ 2; their spread gives the errors).
    pub replicas: usize,
    /// Metropolis sweeps per particle in every kernel application.
    pub sweeps: usize,
    /// Sweeps at T_max after the flow draw, before cooling, at least; then blocks of a quarter
    /// of it until the mean energies stop drifting (see `equilibrate`), at most 20 times as
    /// many.
    pub burn_in: usize,
    /// Target conditional ESS fraction of a rung, in (0, 1).
    pub cess: f64,
    /// Repeat the kernel at a rung so that the particles' energies correlate with their
    /// energies before it by about this much (the number of repeats planned from the previous
    /// rung) …
    pub correlation: f64,
    /// … at most this many times.
    pub max_repeats: usize,
    /// Initial local step size.
    pub step: f64,
    /// Local moves ([`Moves::for_system`]).
    pub moves: Moves,
    /// Seed.
    pub seed: u64,
    /// Print a line at every requested temperature.
    pub progress: bool,
    /// Observables estimated at every requested temperature as ⟨U⟩ is
    /// ([`SmcPoint::observables`]).
    pub observables: Vec<Observable>,
}

impl SmcConfig {
    /// Defaults for temperatures `temps`: 16 replicas of 512 particles, CESS 0.9, 200 sweeps
    /// of burn-in, the system's moves, and per kernel application 5 sweeps of one-particle
    /// moves or, where a sweep is one joint move of all d coordinates, d sweeps (at least 5):
    /// a random-walk move of d coordinates at its best acceptance needs O(d) moves to
    /// decorrelate (Roberts, Gelman & Gilks 1997), and each costs one energy evaluation, little
    /// beside the flow proposal of the same application. Measured on φ⁴ at L = 8 (16 × 256
    /// particles, T from 0.7 down to 0.45 and back, the sweep's trained flow): with 5 sweeps the
    /// flow took 88 % of the time, 11.6 applications per rung, 186 s; with 60, 3.9 and 57 s,
    /// the estimates alike.
    pub fn new(energy: &dyn Energy, temps: Vec<f64>) -> SmcConfig {
        let moves = Moves::for_system(energy);
        let d = energy.dim();
        SmcConfig {
            temps,
            particles: 512,
            replicas: 16,
            sweeps: if moves.blocks(d) > 1 { 5 } else { d.max(5) },
            burn_in: 200,
            cess: 0.9,
            correlation: 0.3,
            max_repeats: 20,
            step: 0.5,
            moves,
            seed: 0,
            progress: false,
            observables: Vec::new(),
        }
    }
}

/// The estimates at one requested temperature.
#[derive(Clone, Debug, Serialize)]
pub struct SmcPoint {
    /// Temperature.
    pub t: f64,
    /// ⟨U⟩, C_V, dC_V/dT (both passes), log Z(T) − log Z(T_max) (cooling); F and S NaN.
    pub thermo: Thermo,
    /// |z| of cooling against heating ⟨U⟩ across replicas (the largest of ⟨U⟩'s and every
    /// observable's).
    pub hysteresis: f64,
    /// Acceptance of the local moves at this rung (both passes).
    pub acceptance: f64,
    /// Correlation of the energies with those before the rung's moves (mean over replicas,
    /// the larger pass).
    pub correlation: f64,
    /// ⟨O⟩ of each observable, pooled and weighted as ⟨U⟩ with its errors (in the sweep's JSON
    /// `observables`).
    #[serde(skip)]
    pub observables: Vec<Influence>,
    /// Whether the equilibrations both passes descend from (the burn-in at T_max; at T_min also
    /// the dwell) stopped because the mean energy had stopped drifting, not at their cap
    /// ([`SmcRun::settled`]). Both passes carry a relaxation cut short, so the hysteresis does
    /// not see it (measured: 32 springs, walls 1, neighbours ½, whose slowest mode relaxes over
    /// thousands of moves: ⟨U⟩ 47.25 ± 0.08 at T = 3 against 48, hysteresis 1.2).
    pub settled: bool,
}

/// A sequential Monte Carlo run.
#[derive(Clone, Debug, Serialize)]
pub struct SmcRun {
    /// One point per requested temperature.
    pub points: Vec<SmcPoint>,
    /// Rungs of the cooling and the heating pass.
    pub rungs: [usize; 2],
    /// Kernel applications at the rungs (both passes).
    pub repeats: usize,
    /// The most applications a rung was allowed ([`SmcConfig::max_repeats`]).
    pub max_repeats: usize,
    /// Replica resamplings (both passes).
    pub resamplings: usize,
    /// Fraction of flow proposals accepted (NaN: none made).
    pub flow_acceptance: f64,
    /// Particles per replica and replicas.
    pub particles: usize,
    /// Independent replicas.
    pub replicas: usize,
    /// Energy evaluations.
    pub energy_evaluations: usize,
    /// Wall time.
    pub seconds: f64,
    /// Requested temperatures.
    pub temps: Vec<f64>,
    /// Whether the burn-in at T_max and the dwell at T_min stopped because the mean energy had
    /// stopped drifting rather than at their cap of 20 × [`SmcConfig::burn_in`] sweeps (pooled
    /// runs: whether every run's did).
    pub settled: [bool; 2],
    /// Flow proposals made and accepted.
    #[serde(skip)]
    flow_proposals: [usize; 2],
    /// What each pass kept at each requested temperature.
    #[serde(skip)]
    records: [Vec<Record>; 2],
}

impl SmcRun {
    /// Pool an independent run of the same temperatures and particles per replica (another
    /// seed) into this one: its replicas join these, and every point is estimated again from
    /// all of them.
    pub fn merge(mut self, other: SmcRun) -> Result<SmcRun> {
        if other.temps != self.temps
            || other.particles != self.particles
            || other.max_repeats != self.max_repeats
        {
            return input_err(
                "only runs over the same temperatures with the same particles per replica and kernel applications per rung pool",
            );
        }
        for (mine, theirs) in self.records.iter_mut().zip(other.records) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                let (ra, rb) = (self.replicas as f64, other.replicas as f64);
                a.u.extend(b.u);
                a.lw.extend(b.lw);
                for (o, p) in a.obs.iter_mut().zip(b.obs) {
                    o.extend(p);
                }
                for (o, p) in a.obs_means.iter_mut().zip(b.obs_means) {
                    o.extend(p);
                }
                a.means.extend(b.means);
                a.log_z.extend(b.log_z);
                a.acceptance = (ra * a.acceptance + rb * b.acceptance) / (ra + rb);
                a.correlation = a.correlation.max(b.correlation);
            }
        }
        for p in 0..2 {
            self.rungs[p] += other.rungs[p];
            self.flow_proposals[p] += other.flow_proposals[p];
            self.settled[p] &= other.settled[p];
        }
        self.repeats += other.repeats;
        self.resamplings += other.resamplings;
        self.replicas += other.replicas;
        self.energy_evaluations += other.energy_evaluations;
        self.seconds += other.seconds;
        self.flow_acceptance = acceptance_of(self.flow_proposals);
        self.points = points(
            &self.temps,
            &self.records,
            self.settled,
            self.particles,
            self.replicas,
        )?;
        Ok(self)
    }

    /// ⟨U⟩, C_V, dC_V/dT where the run starts, at T_max after burn-in, from the cooling pass
    /// alone (replicas weigh alike there): what the anneal starts from, without the heating
    /// pass's return, which the hysteresis check judges. log Z, F and S NaN.
    pub fn start(&self) -> Result<Thermo> {
        let k = self.temps.len() - 1;
        let rec = &self.records[0][k];
        let groups: Vec<usize> = (0..rec.u.len()).map(|i| i / self.particles).collect();
        thermo_replicas(&rec.u, &rec.lw, &groups, self.replicas, self.temps[k])
    }
}

fn acceptance_of([tried, accepted]: [usize; 2]) -> f64 {
    if tried > 0 {
        accepted as f64 / tried as f64
    } else {
        f64::NAN
    }
}

/// Every requested temperature's point from the records; `settled`: [`SmcRun::settled`].
fn points(
    temps: &[f64],
    records: &[Vec<Record>; 2],
    settled: [bool; 2],
    n: usize,
    r: usize,
) -> Result<Vec<SmcPoint>> {
    let k_t = temps.len();
    (0..k_t)
        .map(|k| {
            let start = [&records[0][k_t - 1], &records[1][0]];
            // Every record descends from the burn-in; T_min's heating record from the dwell.
            let settled = settled[0] && (k > 0 || settled[1]);
            point(
                temps[k],
                &records[0][k],
                &records[1][k],
                start,
                settled,
                n,
                r,
            )
        })
        .collect()
}

/// The particles of every replica: replica r holds rows r·N … (r+1)·N.
#[derive(Clone)]
struct Population {
    n: usize,
    r: usize,
    d: usize,
    x: Vec<f64>,
    u: Vec<f64>,
    /// Log-weights, normalised per replica (log-sum-exp 0).
    lw: Vec<f64>,
    log_z: Vec<f64>,
    log_step: Vec<f64>,
}

/// log Σ e^{v}; −∞ for an empty or all −∞ slice.
fn log_sum_exp(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.map(|a| (a - m).exp()).sum::<f64>().ln()
}

/// −U/T-style log-weights: NaN or an infinite energy weigh nothing.
fn finite_or_neg_inf(l: f64) -> f64 {
    if l.is_nan() {
        f64::NEG_INFINITY
    } else {
        l
    }
}

impl Population {
    fn replica(&self, r: usize) -> std::ops::Range<usize> {
        r * self.n..(r + 1) * self.n
    }

    /// Normalise replica r's weights; returns the log of their sum before.
    fn normalise(&mut self, r: usize) -> Result<f64> {
        let range = self.replica(r);
        let s = log_sum_exp(self.lw[range.clone()].iter().copied());
        if s == f64::NEG_INFINITY || s.is_nan() {
            return input_err(format!(
                "sequential Monte Carlo: every particle of replica {r} has zero weight (non-finite energies?)"
            ));
        }
        self.lw[range].iter_mut().for_each(|l| *l -= s);
        Ok(s)
    }

    /// The mean conditional ESS fraction over replicas for a step Δβ (the mean, not the
    /// smallest: the number of rungs then does not grow with the number of replicas).
    fn cess(&self, db: f64) -> f64 {
        (0..self.r)
            .map(|r| {
                let range = self.replica(r);
                let inc = |k: f64| {
                    log_sum_exp(
                        self.lw[range.clone()]
                            .iter()
                            .zip(&self.u[range.clone()])
                            .map(move |(l, u)| finite_or_neg_inf(l - k * db * u)),
                    )
                };
                (2.0 * inc(1.0) - inc(2.0)).exp()
            })
            .sum::<f64>()
            / self.r as f64
    }

    /// The next inverse temperature from β toward `target` (inclusive) at conditional ESS
    /// fraction `cess`.
    fn next_beta(&self, beta: f64, target: f64, cess: f64) -> f64 {
        if self.cess(target - beta) >= cess {
            return target;
        }
        let (mut lo, mut hi) = (0.0, 1.0);
        for _ in 0..50 {
            let mid = 0.5 * (lo + hi);
            if self.cess(mid * (target - beta)) >= cess {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        beta + lo.max(1e-9) * (target - beta)
    }

    /// Reweight every particle from β to β + Δβ.
    fn reweight(&mut self, db: f64) -> Result<()> {
        for (l, u) in self.lw.iter_mut().zip(&self.u) {
            *l = finite_or_neg_inf(*l - db * u);
        }
        for r in 0..self.r {
            self.log_z[r] += self.normalise(r)?;
        }
        Ok(())
    }

    /// Systematic resampling of every replica whose ESS is below N/2; returns how many.
    fn resample(&mut self, rng: &mut impl Rng) -> usize {
        let (n, d) = (self.n, self.d);
        let mut count = 0;
        for r in 0..self.r {
            let range = self.replica(r);
            let w: Vec<f64> = self.lw[range.clone()].iter().map(|l| l.exp()).collect();
            let ess = 1.0 / w.iter().map(|v| v * v).sum::<f64>();
            if ess >= 0.5 * n as f64 {
                continue;
            }
            count += 1;
            let idx = super::independence::systematic(&w, n, rng.random::<f64>());
            let x_old: Vec<f64> = self.x[r * n * d..(r + 1) * n * d].to_vec();
            let u_old: Vec<f64> = self.u[range.clone()].to_vec();
            for (k, &s) in idx.iter().enumerate() {
                self.x[(r * n + k) * d..(r * n + k + 1) * d]
                    .copy_from_slice(&x_old[s * d..(s + 1) * d]);
                self.u[r * n + k] = u_old[s];
            }
            self.lw[range]
                .iter_mut()
                .for_each(|l| *l = -(n as f64).ln());
        }
        count
    }

    /// One step of the flow's independence kernel ([`Independence`]) for every particle at `t`;
    /// returns the accepted count.
    fn flow_move(
        &mut self,
        flow: &Flow,
        energy: &dyn Energy,
        t: f64,
        rng: &mut impl Rng,
    ) -> Result<usize> {
        let kernel = Independence::new(flow);
        let (x, u) = (std::mem::take(&mut self.x), std::mem::take(&mut self.u));
        let mut w = kernel.init(x, u, &[t], &[t])?;
        let step = kernel.step(energy, &mut w, &[t], &[t], rng)?;
        self.x = w.x;
        self.u = w.u;
        Ok(step.moved())
    }

    /// `sweeps` local sweeps of every particle at `t` (in parallel, one stream per particle),
    /// then each replica's step adapted toward acceptance 0.3. Returns the acceptance.
    fn local(
        &mut self,
        energy: &dyn Energy,
        moves: &Moves,
        t: f64,
        sweeps: usize,
        seed: u64,
    ) -> f64 {
        if sweeps == 0 {
            return f64::NAN;
        }
        let (n, d) = (self.n, self.d);
        let steps: Vec<f64> = self.log_step.iter().map(|l| l.exp()).collect();
        let acc: Vec<usize> = self
            .x
            .par_chunks_mut(d)
            .zip(self.u.par_iter_mut())
            .enumerate()
            .map(|(i, (x, u))| {
                let mut rng = crate::rng::stream(seed, "smc/particle", i as u64);
                let mut prop = vec![0.0; d];
                (0..sweeps)
                    .map(|_| moves.sweep(energy, x, u, t, steps[i / n], &mut rng, &mut prop))
                    .sum()
            })
            .collect();
        let per_sweep = (moves.blocks(d) * sweeps * n) as f64;
        let mut total = 0.0;
        for r in 0..self.r {
            let a = acc[self.replica(r)].iter().sum::<usize>() as f64 / per_sweep;
            total += a;
            self.log_step[r] = super::clamp_log_step(self.log_step[r] + 2.0 * (a - 0.3));
        }
        total / self.r as f64
    }

    /// The weighted correlation of the particles' energies with `before` (per replica, then
    /// the mean: the largest of many replicas' noisy values would plan too many moves); NaN
    /// where energies do not vary.
    fn correlation(&self, before: &[f64]) -> f64 {
        let (sum, k) = (0..self.r)
            .map(|r| {
                let range = self.replica(r);
                let pts: Vec<(f64, f64, f64)> = range
                    .map(|i| (self.lw[i].exp(), before[i], self.u[i]))
                    .filter(|(w, a, b)| *w > 0.0 && a.is_finite() && b.is_finite())
                    .collect();
                let mean = |f: &dyn Fn(&(f64, f64, f64)) -> f64| {
                    pts.iter().map(|p| p.0 * f(p)).sum::<f64>()
                        / pts.iter().map(|p| p.0).sum::<f64>()
                };
                let (ma, mb) = (mean(&|p| p.1), mean(&|p| p.2));
                let cov = mean(&|p| (p.1 - ma) * (p.2 - mb));
                let va = mean(&|p| (p.1 - ma).powi(2));
                let vb = mean(&|p| (p.2 - mb).powi(2));
                cov / (va * vb).sqrt()
            })
            .filter(|c| !c.is_nan())
            .fold((0.0, 0usize), |(s, k), c| (s + c, k + 1));
        if k == 0 {
            f64::NAN
        } else {
            sum / k as f64
        }
    }

    /// Replica r's weighted mean energy.
    fn mean_u(&self, r: usize) -> f64 {
        self.mean_of(r, &self.u)
    }

    /// Replica r's weighted mean of `values` (one per particle).
    fn mean_of(&self, r: usize, values: &[f64]) -> f64 {
        let range = self.replica(r);
        self.lw[range.clone()]
            .iter()
            .zip(&values[range])
            .filter(|(l, _)| **l > f64::NEG_INFINITY)
            .map(|(l, v)| l.exp() * v)
            .sum()
    }
}

/// What one pass keeps at a requested temperature.
#[derive(Clone, Debug, Default)]
struct Record {
    u: Vec<f64>,
    lw: Vec<f64>,
    /// `obs[o][particle]`: each observable at each particle.
    obs: Vec<Vec<f64>>,
    /// `obs_means[o][replica]`: each replica's weighted mean of each observable.
    obs_means: Vec<Vec<f64>>,
    means: Vec<f64>,
    log_z: Vec<f64>,
    acceptance: f64,
    correlation: f64,
}

impl Record {
    /// The population `pop` at temperature `t`.
    fn of(
        pop: &Population,
        t: f64,
        observables: &[Observable],
        acceptance: f64,
        correlation: f64,
    ) -> Record {
        let obs = evaluate(observables, &pop.x, pop.d, t);
        Record {
            correlation,
            u: pop.u.clone(),
            lw: pop.lw.clone(),
            obs_means: (obs.iter())
                .map(|o| (0..pop.r).map(|k| pop.mean_of(k, o)).collect())
                .collect(),
            obs,
            means: (0..pop.r).map(|k| pop.mean_u(k)).collect(),
            log_z: pop.log_z.clone(),
            acceptance,
        }
    }
}

/// The MCMC kernel at a rung and its counters.
#[derive(Clone)]
struct Kernel<'a> {
    energy: &'a dyn Energy,
    flow: &'a Flow,
    cfg: &'a SmcConfig,
    flow_tried: usize,
    flow_accepted: usize,
    flow_on: bool,
    stream: u64,
    evaluations: usize,
    repeats: usize,
    planned: usize,
}

impl Kernel<'_> {
    /// A flow proposal per particle (until they stop being accepted), then `sweeps` local
    /// sweeps at `t`; returns the local acceptance.
    fn apply(
        &mut self,
        pop: &mut Population,
        t: f64,
        sweeps: usize,
        rng: &mut crate::rng::SeededRng,
    ) -> Result<f64> {
        let all = pop.n * pop.r;
        if self.flow_on {
            self.flow_accepted += pop.flow_move(self.flow, self.energy, t, rng)?;
            self.flow_tried += all;
            self.evaluations += all;
            if self.flow_tried >= 4 * all
                && (self.flow_accepted as f64) < 0.005 * self.flow_tried as f64
            {
                self.flow_on = false;
            }
        }
        self.stream += 1;
        self.evaluations += sweeps * all * self.cfg.moves.blocks(pop.d);
        Ok(pop.local(
            self.energy,
            &self.cfg.moves,
            t,
            sweeps,
            crate::rng::derive(self.cfg.seed, "smc/moves", self.stream),
        ))
    }

    /// Apply the kernel at `t` the planned number of times, measure the weighted correlation
    /// of the particles' energies with their energies before, and plan the next rung's number
    /// from it: m' = ⌈ln ρ* / ln ρ₁⌉ with ρ₁ = ρ^{1/m} the correlation left by one
    /// application, within 1 … [`SmcConfig::max_repeats`]. The number is fixed before a rung's
    /// moves: stopping when the particles happen to look decorrelated would select the
    /// moments they stop at (measured: ⟨U⟩ 0.4 error bars off on average in a double well).
    /// Returns the last local acceptance and the correlation.
    fn decorrelate(
        &mut self,
        pop: &mut Population,
        t: f64,
        rng: &mut crate::rng::SeededRng,
    ) -> Result<(f64, f64)> {
        let before = pop.u.clone();
        let mut acc = f64::NAN;
        self.repeats = self.planned;
        for _ in 0..self.planned {
            acc = self.apply(pop, t, self.cfg.sweeps, rng)?;
        }
        let rho = pop.correlation(&before);
        let most = self.cfg.max_repeats.max(1);
        let target = self.cfg.correlation;
        self.planned = if rho.is_nan() || rho <= target || target <= 0.0 {
            // Decorrelated (or no target): try one fewer next time.
            self.planned.saturating_sub(1).max(1)
        } else if rho >= 1.0 {
            most
        } else {
            let one = rho.powf(1.0 / self.planned as f64);
            ((target.ln() / one.ln()).ceil() as usize).clamp(1, most)
        };
        Ok((acc, rho))
    }
}

fn check(energy: &dyn Energy, flow: &Flow, cfg: &SmcConfig) -> Result<()> {
    if cfg.temps.is_empty() || cfg.particles < 2 || cfg.replicas < 2 {
        return input_err(
            "sequential Monte Carlo needs ≥ 1 temperature, ≥ 2 particles and ≥ 2 replicas",
        );
    }
    for &t in &cfg.temps {
        check_temperature(t)?;
    }
    if cfg.temps.windows(2).any(|w| w[1] <= w[0]) {
        return input_err("temperatures must be strictly increasing");
    }
    if !(cfg.cess > 0.0 && cfg.cess < 1.0) {
        return input_err(format!(
            "the target conditional ESS must be in (0, 1), got {}",
            cfg.cess
        ));
    }
    if !(cfg.step.is_finite() && cfg.step > 0.0) {
        return input_err("the local step must be positive");
    }
    if flow.dim() != energy.dim() {
        return input_err(format!(
            "the flow has dimension {}, the system {}",
            flow.dim(),
            energy.dim()
        ));
    }
    Ok(())
}

/// Run sequential Monte Carlo from T_max down to T_min and back (see the module docs); `flow`
/// takes the temperature as its condition.
pub fn smc(energy: &dyn Energy, flow: &Flow, cfg: &SmcConfig) -> Result<SmcRun> {
    check(energy, flow, cfg)?;
    let t0 = Instant::now();
    let (n, r, d) = (cfg.particles, cfg.replicas, energy.dim());
    let temps = &cfg.temps;
    let t_max = temps[temps.len() - 1];
    let mut rng = crate::rng::seeded(cfg.seed);
    // Importance weights of draws from the flow at T_max: the kernel's own log-weights.
    let start = Independence::new(flow).start(energy, n * r, &[t_max], &[t_max], &mut rng)?;
    let mut pop = Population {
        n,
        r,
        d,
        x: start.x,
        u: start.u,
        lw: start.log_w,
        log_z: vec![-(n as f64).ln(); r],
        log_step: vec![cfg.step.ln(); r],
    };
    for k in 0..r {
        pop.log_z[k] += pop.normalise(k)?;
    }
    let mut resamplings = pop.resample(&mut rng);
    let mut kernel = Kernel {
        energy,
        flow,
        cfg,
        flow_tried: 0,
        flow_accepted: 0,
        flow_on: true,
        stream: 0,
        evaluations: n * r,
        repeats: 0,
        planned: 1,
    };
    let (done, acc_max, burnt_in) = equilibrate(&mut kernel, &mut pop, t_max, &mut rng)?;
    let mut settled = [burnt_in, true];
    if cfg.progress {
        eprintln!(
            "[smc] burn-in at T = {t_max:.4}: {done} sweeps{}, {:.1} s",
            at_cap(burnt_in),
            t0.elapsed().as_secs_f64()
        );
    }
    let k_t = temps.len();
    let mut records = [vec![Record::default(); k_t], vec![Record::default(); k_t]];
    records[0][k_t - 1] = Record::of(&pop, t_max, &cfg.observables, acc_max, f64::NAN);
    let mut rungs = [0usize; 2];
    let mut repeats = 0usize;
    // Cooling: requested temperatures from the hottest down; heating: back up.
    let order: [Vec<usize>; 2] = [(0..k_t - 1).rev().collect(), (1..k_t).collect()];
    for pass in 0..2 {
        if pass == 1 {
            // A copy of the particles dwells at T_min as they were burnt in at T_max: T_min's
            // hysteresis compares the cooling pass's arrival with it (a pass that lags most
            // where it ends shows there too). The climb starts from the arrival itself, with
            // the kernel and stream it had: its stragglers from hotter rungs cover the broader
            // targets above, and the copy's flow proposals, rarely accepted at T_min, would
            // switch the climb's off (measured on the double well of tests/smc.rs, 24 seeds:
            // climbing from the dwelt copy, |z| of ⟨U⟩ and C_V against quadrature up to 5.9,
            // mean −0.65; as now, 3.3 and −0.05, as without a dwell).
            let (mut dwelt, mut aside) = (pop.clone(), kernel.clone());
            aside.stream += 1 << 20;
            let mut dwell_rng = crate::rng::stream(cfg.seed, "smc/dwell", 0);
            let (done, acc, dwelt_in) =
                equilibrate(&mut aside, &mut dwelt, temps[0], &mut dwell_rng)?;
            settled[1] = dwelt_in;
            kernel.evaluations = aside.evaluations;
            records[1][0] = Record::of(&dwelt, temps[0], &cfg.observables, acc, f64::NAN);
            if cfg.progress {
                eprintln!(
                    "[smc] dwell at T = {:.4}: {done} sweeps{}, {:.1} s",
                    temps[0],
                    at_cap(dwelt_in),
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        for &k in &order[pass] {
            let target = 1.0 / temps[k];
            let mut beta = 1.0
                / if pass == 0 {
                    temps[k + 1]
                } else {
                    temps[k - 1]
                };
            let (mut acc, mut rho) = (f64::NAN, f64::NAN);
            while beta != target {
                let next = pop.next_beta(beta, target, cfg.cess);
                pop.reweight(next - beta)?;
                resamplings += pop.resample(&mut rng);
                beta = next;
                (acc, rho) = kernel.decorrelate(&mut pop, 1.0 / beta, &mut rng)?;
                repeats += kernel.repeats;
                rungs[pass] += 1;
                if rungs[pass] > MAX_RUNGS {
                    return input_err(format!(
                        "sequential Monte Carlo: more than {MAX_RUNGS} rungs in one pass (energies too spread for the target conditional ESS)"
                    ));
                }
                if crate::observe::interrupted() {
                    return Err(crate::Error::Interrupted(
                        "sequential Monte Carlo stopped by Ctrl-C".into(),
                    ));
                }
            }
            records[pass][k] = Record::of(&pop, temps[k], &cfg.observables, acc, rho);
            if cfg.progress {
                eprintln!(
                    "[smc] {} T = {:.4}: {} rungs, {:.1} kernel applications per rung, energy correlation {:.2}, local acceptance {:.2}, flow proposals {}, {:.1} s",
                    if pass == 0 { "cooling" } else { "heating" },
                    temps[k],
                    rungs[pass],
                    repeats as f64 / (rungs[0] + rungs[1]).max(1) as f64,
                    rho,
                    acc,
                    if kernel.flow_on {
                        format!(
                            "{:.3} accepted",
                            kernel.flow_accepted as f64 / kernel.flow_tried.max(1) as f64
                        )
                    } else {
                        "stopped (too few accepted)".into()
                    },
                    t0.elapsed().as_secs_f64()
                );
            }
        }
    }
    let flow_proposals = [kernel.flow_tried, kernel.flow_accepted];
    Ok(SmcRun {
        points: points(temps, &records, settled, n, r)?,
        rungs,
        repeats,
        max_repeats: cfg.max_repeats,
        resamplings,
        flow_acceptance: acceptance_of(flow_proposals),
        particles: n,
        replicas: r,
        energy_evaluations: kernel.evaluations,
        seconds: t0.elapsed().as_secs_f64(),
        temps: temps.clone(),
        settled,
        flow_proposals,
        records,
    })
}

/// What a progress line adds where [`equilibrate`] stopped at its cap of 20 × `burn_in`
/// sweeps, not because the energies had stopped drifting.
fn at_cap(settled: bool) -> &'static str {
    if settled {
        ""
    } else {
        " (its cap: the mean energy may still be drifting; the run's points are not settled)"
    }
}

/// Equilibrate at `t` ([`SmcConfig::burn_in`]): at least `burn_in` sweeps, then blocks of
/// `burn_in` / 4 (at least [`SmcConfig::sweeps`]) until, after block k ≥ 3, the population's
/// mean energy has been stationary for at least the second half of the blocks (MSER's cut of
/// the series of block means, [`super::stats::mser`], at most k/2) and the replicas' mean
/// energies agree with theirs after block ⌊k/2⌋ (paired |t| < 2), or 20 × `burn_in`.
/// Consecutive blocks do not do: a slow relaxation's step between two of them drowns in the
/// noise (measured: 16 springs, walls 1, neighbours ½, from the untrained linear flow at T = 3,
/// where ⟨U⟩ = 24: stopped after 400 sweeps at 23.27 ± 0.05, which both passes then carried).
/// Returns the sweeps made, the last local acceptance and whether the energies had stopped
/// drifting (false: stopped at the cap).
fn equilibrate(
    kernel: &mut Kernel,
    pop: &mut Population,
    t: f64,
    rng: &mut crate::rng::SeededRng,
) -> Result<(usize, f64, bool)> {
    let cfg = kernel.cfg;
    let mut acc = f64::NAN;
    let (mut done, block) = (0usize, (cfg.burn_in / 4).max(cfg.sweeps).max(1));
    let mut history: Vec<Vec<f64>> = Vec::new();
    while done < 20 * cfg.burn_in {
        let mut left = block;
        while left > 0 {
            let sweeps = cfg.sweeps.max(1).min(left);
            acc = kernel.apply(pop, t, sweeps, rng)?;
            left -= sweeps;
        }
        done += block;
        history.push((0..pop.r).map(|k| pop.mean_u(k)).collect());
        let k = history.len() - 1;
        let series: Vec<f64> = (history.iter())
            .map(|m| m.iter().sum::<f64>() / m.len() as f64)
            .collect();
        if done >= cfg.burn_in
            && k >= 3
            && 2 * mser(&series, 0, k) <= k
            && paired_t(&history[k / 2], &history[k]) < 2.0
        {
            return Ok((done, acc, true));
        }
    }
    Ok((done, acc, false))
}

/// Pool both passes at one temperature.
/// `start[p]`: the record each pass's path factors are taken from (T_max after burn-in for
/// cooling, T_min for heating); `settled`: [`SmcPoint::settled`].
fn point(
    t: f64,
    cool: &Record,
    heat: &Record,
    start: [&Record; 2],
    settled: bool,
    n: usize,
    r: usize,
) -> Result<SmcPoint> {
    let mut u = Vec::with_capacity(4 * n * r);
    let mut lw = Vec::with_capacity(4 * n * r);
    let mut groups = Vec::with_capacity(4 * n * r);
    let mut obs = vec![Vec::with_capacity(4 * n * r); cool.obs.len()];
    for (rec, from) in [cool, heat].into_iter().zip(start) {
        // Replica r's share of the pass ∝ its path factor Ẑ_r(T)/Ẑ_r(start), half per pass.
        let c: Vec<f64> = (0..r).map(|k| rec.log_z[k] - from.log_z[k]).collect();
        let norm = log_sum_exp(c.iter().copied()) + std::f64::consts::LN_2;
        u.extend(&rec.u);
        obs.iter_mut().zip(&rec.obs).for_each(|(o, v)| o.extend(v));
        lw.extend(rec.lw.iter().enumerate().map(|(i, l)| l + c[i / n] - norm));
        groups.extend((0..n * r).map(|i| i / n));
    }
    let mut th = thermo_replicas(&u, &lw, &groups, r, t)?;
    let observables = (obs.iter())
        .map(|o| influence_replicas(o, &lw, &groups, r))
        .collect::<Result<Vec<_>>>()?;
    let c2 = r as f64 / (r - 1) as f64;
    // log Z(T) − log Z(T_max) from the cooling pass's path factors: log mean_r Ẑ_r(T)/Ẑ_r(T_max).
    // (The flow's own log Ẑ at T_max is not part of it: a flow that misses a basin gets it wrong.)
    let rel: Vec<f64> = (0..r).map(|k| cool.log_z[k] - start[0].log_z[k]).collect();
    let mean_z = Weights::from_log(&rel)?.log_mean();
    th.log_z = Estimate {
        value: mean_z.value,
        se: mean_z.se * c2.sqrt(),
    };
    th.cov[3][3] = th.log_z.se.powi(2);
    // F and S need log Z(T_max) itself.
    th.f = Estimate::NAN;
    th.s = th.f;
    // ⟨U⟩'s and every observable's (one may lag where U keeps up).
    let hysteresis = (cool.obs_means.iter().zip(&heat.obs_means))
        .map(|(c, h)| paired_t(c, h))
        .fold(paired_t(&cool.means, &heat.means), f64::max);
    let finite: Vec<f64> = [cool.acceptance, heat.acceptance]
        .into_iter()
        .filter(|a| a.is_finite())
        .collect();
    let acceptance = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
    Ok(SmcPoint {
        t,
        thermo: th,
        hysteresis,
        acceptance,
        correlation: cool.correlation.max(heat.correlation),
        observables,
        settled,
    })
}
