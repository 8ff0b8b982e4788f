//! Where temperatures still fail after the repairs: parallel tempering as the estimator, with
//! the conditioned flow's proposals among its moves (before annealing, which takes what it
//! leaves failing).
//!
//! The ladder is the witness's ([`crate::sweep::witness`]: every grid temperature a rung, filled
//! geometrically, continued to 2 T_max), [`TEMPER_LADDERS`] ladders from dispersed starts of
//! its own seed, the system's local moves, exchanges between neighbours, and every
//! [`FLOW_EVERY`] sweeps ([`FLOW_EVERY_LATTICE`] on lattice fields) an independence proposal from
//! the flow at every rung's temperature (accepted with min(1, w(x')/w(x)), w = e^{−U/T}/q(x|T); the
//! kernel is exact either way). From halfway through burn-in (after at least 20 rounds of them)
//! they continue only at the rungs where the weights of the proposals so far have PSIS k̂ < ½:
//! where the flow's weights are heavy-tailed the chains stick at states of large weight for
//! heavy-tailed stretches and the errors between ladders come out too small (measured on
//! double-well-1d, 6 seeds: z-scores against quadrature of rms 1.27 with flow proposals at every
//! rung, 0.87, at most 2.4, with this rule); they stop everywhere where fewer than 0.5 % are
//! accepted. Exchanges carry configurations between temperatures, which sequential Monte Carlo
//! cannot do once it has passed a temperature: on a cluster through its melting peak the annealed
//! particles lag behind (hysteresis), the ladder does not.
//!
//! At every grid temperature ⟨U⟩, C_V and dC_V/dT pool every sweep after burn-in of every
//! ladder; their errors come from the spread between ladders (independent, each from its own
//! start: [`crate::estimators::thermo_replicas`]), which holds whatever each ladder's
//! autocorrelation. log Z, F and S are not estimated there. The estimate's own checks
//! ([`crate::sweep::checks::local_tempering`]):
//! * `pt_round_trips`: round trips (coldest → hottest → coldest) ≥ [`TRIPS_PER_LADDER`] per
//!   ladder: replicas that do not travel the ladder do not carry what the hot rungs find;
//! * `pt_split`: |t| ≤ 4 for the paired difference, across ladders, of each ladder's ⟨U⟩ over
//!   the first and the second half of its sweeps: a ladder still relaxing, or stuck for part of
//!   the run, drifts.
//!
//! Independent runs are pooled (their ladders are further groups) until C_V reaches `cv_tol` at
//! the failing temperatures that pass their own checks: each further run has about
//! L (r/tol)² · 1.2 − L more ladder-sweeps (L those so far, r the worst relative error), within
//! `max_samples` ladder-sweeps per temperature and [`ESTIMATE_GROWTH`] times the first run's
//! (a step budget: the same seed gives the same run on any machine), and within
//! `estimate_seconds` where the user sets that wall-time limit.

use std::time::Instant;

use serde::Serialize;

use super::importance::Estimator;
use super::{left_by_time, more, Tempering};
use crate::error::Result;
use crate::estimators::{influence_replicas, thermo_replicas, Estimate, Influence, Thermo};
use crate::flows::Flow;
use crate::mcmc::{dispersed_starts, paired_t, parallel_tempering_with, tau_int, Moves, PtConfig};
use crate::sweep::witness::ladder;
use crate::sweep::{checks, State, Sweeper, ESTIMATE_GROWTH};

/// Ladders of one tempering run.
pub const TEMPER_LADDERS: usize = 16;
/// Sweeps between two rounds of flow proposals.
pub const FLOW_EVERY: usize = 10;
/// … on a lattice field, whose flow's proposal costs about 30 times a coupling flow's (0.25 ms
/// per configuration of φ⁴ at L = 8, where a sweep of local moves costs microseconds).
pub const FLOW_EVERY_LATTICE: usize = 200;
/// Round trips per ladder the estimate needs.
pub const TRIPS_PER_LADDER: f64 = 4.0;

/// The tempering estimate at one grid temperature.
#[derive(Clone, Debug, Serialize)]
pub struct TemperPoint {
    /// Temperature.
    pub t: f64,
    /// ⟨U⟩, C_V, dC_V/dT with errors from the spread between ladders; log Z, F, S NaN.
    #[serde(skip)]
    pub thermo: Thermo,
    /// |t| of the ladders' first-half against second-half ⟨U⟩, the largest of U's and every
    /// observable's.
    pub split: f64,
    /// Round trips per ladder (the whole ladder's, pooled over runs).
    pub round_trips_per_ladder: f64,
    /// Local-move acceptance at this temperature.
    pub acceptance: f64,
    /// τ_int of U at this temperature, in sweeps.
    pub tau_int: f64,
    /// ⟨O⟩ of each of the sweep's observables, with errors from the spread between ladders as
    /// ⟨U⟩'s (in the JSON's `observables`).
    #[serde(skip)]
    pub observables: Vec<Influence>,
}

/// The pooled tempering runs whose estimates replaced failing ones.
#[derive(Clone, Debug, Serialize)]
pub struct TemperRun {
    /// One point per grid temperature.
    pub points: Vec<TemperPoint>,
    /// Rungs of the ladder.
    pub rungs: usize,
    /// Ladders, all runs.
    pub ladders: usize,
    /// Sweeps after burn-in, summed over ladders.
    pub ladder_sweeps: usize,
    /// Round trips, all ladders.
    pub round_trips: usize,
    /// Acceptance of the flow's proposals (NaN: none made).
    pub flow_acceptance: f64,
    /// For each pooled run, the rungs that kept flow proposals after burn-in (of `rungs`).
    pub flow_rungs: Vec<usize>,
    /// Lowest exchange acceptance between neighbouring rungs.
    pub min_swap_acceptance: f64,
    /// Energy evaluations, burn-in included.
    pub energy_evaluations: usize,
    /// Seconds.
    pub seconds: f64,
}

/// What the runs so far have recorded at the grid temperatures.
struct Pool {
    /// `traces[i][ladder]`: energies at grid temperature i after burn-in.
    traces: Vec<Vec<Vec<f64>>>,
    /// `observables[o][i][ladder]`: observable o's means over the first ⌊n/2⌋ and the other
    /// sweeps of those n.
    observables: Vec<Vec<Vec<[f64; 2]>>>,
    acceptance: Vec<f64>,
    round_trips: usize,
    ladder_sweeps: usize,
    flow: (f64, usize),
    flow_rungs: Vec<usize>,
    min_swap: f64,
    rungs: usize,
    evaluations: usize,
    seconds: f64,
}

impl Pool {
    fn ladders(&self) -> usize {
        self.traces.first().map_or(0, |t| t.len())
    }

    /// The estimate at grid temperature `i`.
    fn point(&self, i: usize, t: f64) -> Result<TemperPoint> {
        let tr = &self.traces[i];
        let r = tr.len();
        let u: Vec<f64> = tr.iter().flatten().copied().collect();
        let groups: Vec<usize> = tr
            .iter()
            .enumerate()
            .flat_map(|(l, s)| std::iter::repeat_n(l, s.len()))
            .collect();
        let mut th = thermo_replicas(&u, &vec![0.0; u.len()], &groups, r, t)?;
        th.ess_fraction = f64::NAN;
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
        let (first, second): (Vec<f64>, Vec<f64>) = tr
            .iter()
            .map(|s| (mean(&s[..s.len() / 2]), mean(&s[s.len() / 2..])))
            .unzip();
        let mut split = paired_t(&first, &second);
        // Each ladder one value, its mean, weighing its sweeps; and each observable's halves
        // held to the same split check as U's (an observable may relax slower than U).
        let log_sweeps: Vec<f64> = tr.iter().map(|s| (s.len() as f64).ln()).collect();
        let ladders: Vec<usize> = (0..r).collect();
        let mut observables = Vec::with_capacity(self.observables.len());
        for o in &self.observables {
            let means: Vec<f64> = (o[i].iter().zip(tr))
                .map(|(h, s)| {
                    let n1 = (s.len() / 2) as f64;
                    (h[0] * n1 + h[1] * (s.len() as f64 - n1)) / s.len().max(1) as f64
                })
                .collect();
            observables.push(influence_replicas(&means, &log_sweeps, &ladders, r)?);
            let (a, b): (Vec<f64>, Vec<f64>) = o[i].iter().map(|h| (h[0], h[1])).unzip();
            split = split.max(paired_t(&a, &b));
        }
        Ok(TemperPoint {
            t,
            thermo: th,
            split,
            round_trips_per_ladder: self.round_trips as f64 / r as f64,
            acceptance: self.acceptance[i],
            tau_int: tau_int(tr),
            observables,
        })
    }

    fn merge(&mut self, other: Pool) {
        let (a, b) = (self.ladder_sweeps as f64, other.ladder_sweeps as f64);
        let share = |x: f64, y: f64| (a * x + b * y) / (a + b);
        for (s, o) in self.traces.iter_mut().zip(other.traces) {
            s.extend(o);
        }
        for (s, o) in self.observables.iter_mut().zip(other.observables) {
            s.iter_mut().zip(o).for_each(|(s, o)| s.extend(o));
        }
        for (s, o) in self.acceptance.iter_mut().zip(other.acceptance) {
            *s = share(*s, o);
        }
        self.flow = match (self.flow.1, other.flow.1) {
            (0, _) => other.flow,
            (_, 0) => self.flow,
            (n, m) => (
                (self.flow.0 * n as f64 + other.flow.0 * m as f64) / (n + m) as f64,
                n + m,
            ),
        };
        self.flow_rungs.extend(other.flow_rungs);
        self.round_trips += other.round_trips;
        self.ladder_sweeps += other.ladder_sweeps;
        self.min_swap = self.min_swap.min(other.min_swap);
        self.evaluations += other.evaluations;
        self.seconds += other.seconds;
    }
}

/// One run of `sweeps` sweeps after burn-in (a fifth as many before).
fn run_once(
    sw: &Sweeper,
    flow: &Flow,
    settings: &Tempering,
    sweeps: usize,
    seed: u64,
) -> Result<Pool> {
    let t0 = Instant::now();
    let (rungs, grid_index) = ladder(&sw.temps, sw.energy.dim(), settings.hottest);
    let mut rng = crate::rng::stream(seed, "tempering/starts", 0);
    let flow_every = match sw.energy.structure() {
        crate::systems::Structure::Lattice(_) => FLOW_EVERY_LATTICE,
        _ => FLOW_EVERY,
    };
    let pt = PtConfig {
        temps: rungs.clone(),
        n_ladders: TEMPER_LADDERS,
        n_sweeps: sweeps,
        // Long enough for 20 rounds of flow proposals in its first half, whose weights decide
        // where they go on.
        burn_in: (sweeps / 5).max(100).max(40 * flow_every),
        thin: sweeps.max(1),
        step: 0.5,
        init: None,
        starts: match &settings.starts {
            Some(starts) => starts.clone(),
            None => dispersed_starts(sw.energy, TEMPER_LADDERS, &mut rng)?,
        },
        seed,
        n_batches: 16,
        moves: Moves::for_system(sw.energy),
        flow_every,
        progress: sw.cfg.progress.then(|| "sweep".into()),
        observables: sw.cfg.observables.clone(),
    };
    let run = parallel_tempering_with(sw.energy, &pt, settings.flow_proposals.then_some(flow))?;
    let on_grid: Vec<usize> = (0..sw.temps.len())
        .filter_map(|i| grid_index.iter().position(|&g| g == Some(i)))
        .collect();
    let mut traces = run.traces;
    let mut observables = run.observables;
    Ok(Pool {
        observables: (observables.iter_mut())
            .map(|o| on_grid.iter().map(|&k| std::mem::take(&mut o[k])).collect())
            .collect(),
        traces: on_grid
            .iter()
            .map(|&k| std::mem::take(&mut traces[k]))
            .collect(),
        acceptance: on_grid.iter().map(|&k| run.acceptance[k]).collect(),
        round_trips: run.round_trips,
        ladder_sweeps: TEMPER_LADDERS * sweeps,
        flow: (run.flow_acceptance, TEMPER_LADDERS * sweeps),
        flow_rungs: vec![run.flow_rungs.iter().filter(|&&on| on).count()],
        min_swap: run
            .swap_acceptance
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min),
        rungs: rungs.len(),
        evaluations: run.energy_evaluations,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Whether a point's own checks pass (then more sweeps can bring its error down).
fn sound(p: &TemperPoint) -> bool {
    p.split <= checks::Z_LIMIT && p.round_trips_per_ladder >= TRIPS_PER_LADDER
}

/// Tempering runs pooled until C_V reaches `cv_tol` at the `failing` temperatures that pass
/// their own checks (see the module doc). None when interrupted.
fn temper_rounds(
    sw: &Sweeper,
    flow: &Flow,
    settings: &Tempering,
    failing: &[usize],
) -> Result<Option<TemperRun>> {
    let (cfg, temps) = (sw.cfg, &sw.temps);
    let first = cfg.witness_sweeps.max(2000);
    let mut sweeps = first;
    let mut pool: Option<Pool> = None;
    let mut first_run: Option<usize> = None;
    for round in 0u64.. {
        let seed = crate::rng::derive(sw.seed, "sweep/tempering", round);
        let Some(next) =
            crate::error::unless_interrupted(run_once(sw, flow, settings, sweeps, seed))?
        else {
            return Ok(None);
        };
        let pooled = match pool.take() {
            None => next,
            Some(mut p) => {
                p.merge(next);
                p
            }
        };
        let points = failing
            .iter()
            .map(|&i| pooled.point(i, temps[i]))
            .collect::<Result<Vec<_>>>()?;
        let worst = points
            .iter()
            .filter(|p| sound(p))
            .map(|p| p.thermo.cv.se / p.thermo.cv.value.abs())
            .fold(
                f64::NAN,
                |a: f64, b| if b.is_nan() { f64::INFINITY } else { a.max(b) },
            );
        let l = pooled.ladder_sweeps;
        let first = *first_run.get_or_insert(l);
        let by_samples = cfg
            .max_samples
            .min(ESTIMATE_GROWTH * first)
            .saturating_sub(l);
        let left = by_samples.min(left_by_time(cfg.estimate_seconds, pooled.seconds, l));
        let more = more(l, worst, cfg.cv_tol, l / 4, left) / TEMPER_LADDERS;
        if cfg.progress {
            eprintln!(
                "[sweep] parallel tempering: {} ladders × {} rungs, {} round trips, worst C_V error {} at the failing temperatures that pass its checks, {:.1} s{}",
                pooled.ladders(),
                pooled.rungs,
                pooled.round_trips,
                if worst.is_nan() {
                    "– (none passes)".to_string()
                } else {
                    format!("{:.2} %", 100.0 * worst)
                },
                pooled.seconds,
                if more >= 200 {
                    format!("; {more} more sweeps")
                } else {
                    String::new()
                }
            );
        }
        pool = Some(pooled);
        if more < 200 || crate::observe::interrupted() {
            break;
        }
        sweeps = more;
    }
    let Some(pool) = pool else {
        return Ok(None);
    };
    let points = temps
        .iter()
        .enumerate()
        .map(|(i, &t)| pool.point(i, t))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(TemperRun {
        points,
        rungs: pool.rungs,
        ladders: pool.ladders(),
        ladder_sweeps: pool.ladder_sweeps,
        round_trips: pool.round_trips,
        flow_acceptance: pool.flow.0,
        flow_rungs: pool.flow_rungs,
        min_swap_acceptance: pool.min_swap,
        energy_evaluations: pool.evaluations,
        seconds: pool.seconds,
    }))
}

/// Where temperatures still fail: parallel tempering with flow proposals (see the module doc)
/// replaces their estimates; checks are recomputed and the replacement is undone when fewer
/// temperatures are trusted after it.
pub(in crate::sweep) fn run(sw: &Sweeper, st: &mut State, settings: &Tempering) -> Result<()> {
    let (cfg, temps) = (sw.cfg, &sw.temps);
    let failing = st.failing();
    if failing.is_empty() {
        return Ok(());
    }
    if cfg.progress {
        eprintln!(
            "[sweep] parallel tempering for {} ({} of {} temperatures fail): {TEMPER_LADDERS} ladders, local moves, exchanges{}",
            checks::ranges(temps, &failing),
            failing.len(),
            temps.len(),
            match (&settings.starts, settings.flow_proposals) {
                (None, true) => " and flow proposals; dispersed starts",
                (None, false) => "; dispersed starts",
                (Some(_), true) => " and flow proposals; the given starts",
                (Some(_), false) => "; the given starts",
            }
        );
    }
    let Some(run) = temper_rounds(sw, &st.flow, settings, &failing)? else {
        st.repairs
            .push("parallel tempering interrupted; its estimates not used".into());
        return Ok(());
    };
    // Its witness: sequential Monte Carlo over the grid, not the tempering witness, which
    // shares its blind spots; runs pooled until its errors resolve the tempered points' (the
    // anneal, where it follows, pools further runs with it).
    if cfg.progress {
        eprintln!(
            "[sweep] witness of the tempered temperatures: sequential Monte Carlo from T = {:.3} to {:.3} and back",
            temps[temps.len() - 1],
            temps[0]
        );
    }
    let tempered: Vec<(usize, Thermo)> =
        failing.iter().map(|&i| (i, run.points[i].thermo)).collect();
    st.smc = super::anneal::rounds(sw, &st.flow, &[], st.smc.take(), &tempered)?;
    let saved = st.saved();
    let nan = Estimate::NAN;
    for &i in &failing {
        let p = &run.points[i];
        let r = &mut st.rounds;
        let mut th = p.thermo;
        // log Z is not estimated by the ladder (0 in the covariance keeps the checks finite).
        th.log_z = nan;
        th.f = nan;
        th.s = nan;
        th.cov[3][3] = 0.0;
        r.th[i] = th;
        r.reached[i] = cfg
            .cv_tol
            .is_none_or(|tol| th.cv.se <= tol * th.cv.value.abs());
        r.method[i] = Estimator::Tempering(p.clone());
    }
    st.estimate_seconds += run.seconds;
    let what = format!(
        "parallel tempering ({} ladders × {} rungs, {} sweeps per ladder on average, {} round trips, flow proposals accepted {:.3} and kept after burn-in at {:?} of {} rungs (weights' k̂ < ½), lowest exchange acceptance {:.2}, {:.1} s) replaced the estimates at {}",
        run.ladders,
        run.rungs,
        run.ladder_sweeps / run.ladders.max(1),
        run.round_trips,
        run.flow_acceptance,
        run.flow_rungs,
        run.rungs,
        run.min_swap_acceptance,
        run.seconds,
        crate::sweep::at(temps, &failing),
    );
    if crate::sweep::settle(sw, st, saved, &what)? {
        st.tempering = Some(run);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// 16 ladders of AR(1) energies around 1 (τ_int = 4.5 sweeps), with `drift` added
    /// linearly over the run.
    fn pool(drift: f64, seed: u64) -> Pool {
        let mut rng = crate::rng::seeded(seed);
        let n = 20_000;
        let traces: Vec<Vec<f64>> = (0..16)
            .map(|_| {
                let mut x = 0.0;
                (0..n)
                    .map(|s| {
                        x = 0.8 * x + rng.random_range(-1.0..1.0);
                        1.0 + x + drift * s as f64 / n as f64
                    })
                    .collect()
            })
            .collect();
        // An observable equal to U: each ladder's mean energy over each half.
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
        let halves = traces
            .iter()
            .map(|t| [mean(&t[..n / 2]), mean(&t[n / 2..])]);
        Pool {
            observables: vec![vec![halves.collect()]],
            traces: vec![traces],
            acceptance: vec![0.3],
            round_trips: 160,
            ladder_sweeps: 16 * n,
            flow: (f64::NAN, 0),
            flow_rungs: vec![0],
            min_swap: 0.5,
            rungs: 1,
            evaluations: 0,
            seconds: 1.0,
        }
    }

    /// Stationary ladders pass the split check and their ⟨U⟩ covers the truth; a drift of a
    /// few standard errors over the run fails it; pooled runs add their ladders as groups.
    #[test]
    fn split_sees_a_drift_and_errors_cover_a_stationary_run() {
        let p = pool(0.0, 1).point(0, 1.0).unwrap();
        assert!(p.split < 4.0, "split {}", p.split);
        // The observable's ladder means, weighted by their sweeps, give ⟨U⟩ and its error.
        let (o, u) = (p.observables[0].estimate(), p.thermo.u);
        assert!((o.value - u.value).abs() < 1e-12 && (o.se / u.se - 1.0).abs() < 1e-9);
        assert!((p.thermo.u.value - 1.0).abs() < 4.0 * p.thermo.u.se);
        assert!(sound(&p));
        let drifting = pool(0.5, 2).point(0, 1.0).unwrap();
        assert!(drifting.split > 4.0, "split {}", drifting.split);
        assert!(!sound(&drifting));
        let mut a = pool(0.0, 3);
        a.merge(pool(0.0, 4));
        let m = a.point(0, 1.0).unwrap();
        assert_eq!(a.ladders(), 32);
        assert!((m.observables[0].estimate().se / m.thermo.u.se - 1.0).abs() < 1e-9);
        assert!(m.thermo.u.se < p.thermo.u.se);
        assert_eq!(m.round_trips_per_ladder, 10.0);
        // Stationary energies but an observable whose ladders all drift by 0.1 between their
        // halves (each ladder's halves 1 ± 0.05 apart at random): the split check sees it.
        let mut slow = pool(0.0, 5);
        let mut rng = crate::rng::seeded(6);
        for h in slow.observables[0][0].iter_mut() {
            let base = 1.0 + rng.random_range(-0.05..0.05);
            *h = [base, base + 0.1 + rng.random_range(-0.05..0.05)];
        }
        let p = slow.point(0, 1.0).unwrap();
        assert!(p.split > 4.0 && !sound(&p), "split {}", p.split);
    }
}
