//! The sweep's independent witness: parallel tempering that finds basins on its own.
//!
//! The ladder's rungs are all the temperatures of the sweep's grid (filled geometrically
//! where neighbours are further apart than the ratio r = 1 + 0.25/√(max(d, 2)/2)), continued
//! above T_max up to 2 T_max so that the hottest replicas cross barriers. Every temperature is
//! thus compared with the witness at that very temperature: a flow that is right at one grid
//! point and wrong at its neighbour is caught at the neighbour. Each of the `ladders`
//! ladders starts from its own dispersed configuration ([`dispersed_starts`]), not from the
//! flow or its training data, so the witness does not share their blind spots. The run counts
//! round trips coldest → hottest → coldest: evidence that the ladder mixes.
//!
//! At each rung on the grid the witness gives ⟨U⟩ and C_V with batch-means errors and
//! configurations x ~ p(·|T). With the flow's log-weights ℓ(x) = −U(x)/T − log q(x|T), the
//! **missed mass** is the fraction of witness configurations whose ℓ exceeds the largest ℓ
//! among the flow's own samples at that temperature: an estimate of P_p(p/q > max_i p/q)
//! — the Boltzmann mass in regions the flow's samples never reached.

use std::time::Instant;

use ndarray::Array2;
use serde::Serialize;

use crate::error::Result;
use crate::estimators::{mean_replicas, Estimate};
use crate::flows::Flow;
use crate::mcmc::{dispersed_starts, parallel_tempering, McThermo, PtConfig};
use crate::observables::Observable;
use crate::systems::Energy;

/// Settings of the witness.
#[derive(Clone, Debug, Serialize)]
pub struct WitnessConfig {
    /// Sweeps after burn-in (a step budget: the same on any machine).
    pub sweeps: usize,
    /// Independent ladders, each from its own dispersed start.
    pub ladders: usize,
    /// Seed.
    pub seed: u64,
}

/// A finished witness run.
#[derive(Clone, Debug)]
pub struct Witness {
    /// Rung temperatures (increasing).
    pub rungs: Vec<f64>,
    /// For each rung, its index in the sweep's grid (None for a rung between grid points or
    /// above T_max).
    pub grid_index: Vec<Option<usize>>,
    /// ⟨U⟩, C_V with batch-means errors per rung.
    pub thermo: Vec<McThermo>,
    /// Configurations per rung.
    pub samples: Vec<Array2<f64>>,
    /// Round trips, all ladders.
    pub round_trips: usize,
    /// Ladders run.
    pub ladders: usize,
    /// Seconds.
    pub seconds: f64,
    /// Energy evaluations.
    pub evaluations: usize,
}

/// The ladder: every temperature of the sweep's grid is a rung (so that every temperature's
/// estimates are compared with the witness *at that temperature*, never at a neighbour's),
/// with extra rungs where neighbouring grid points are further apart than the ratio r, and
/// rungs above T_max up to `hottest` · T_max (the witness's: 2). Returns (rungs, grid index of
/// each rung).
pub(super) fn ladder(grid: &[f64], dim: usize, hottest: f64) -> (Vec<f64>, Vec<Option<usize>>) {
    let ratio = 1.0 + 0.25 / ((dim.max(2) as f64) / 2.0).sqrt();
    let mut rungs = Vec::new();
    let mut index = Vec::new();
    for (i, &t) in grid.iter().enumerate() {
        if let Some(&prev) = rungs.last() {
            let prev: f64 = prev;
            // Geometric fill between grid points further apart than the ratio.
            let gaps = ((t / prev).ln() / ratio.ln()).ceil() as usize;
            for j in 1..gaps.min(16) {
                rungs.push(prev * (t / prev).powf(j as f64 / gaps as f64));
                index.push(None);
            }
        }
        rungs.push(t);
        index.push(Some(i));
    }
    let t_max = grid[grid.len() - 1];
    let mut t = t_max * ratio;
    let mut above = 0;
    while t <= hottest * t_max * 1.0001 && above < 16 {
        rungs.push(t);
        index.push(None);
        t *= ratio;
        above += 1;
    }
    (rungs, index)
}

/// Run the witness over the sweep's `grid`.
pub fn run_witness(energy: &dyn Energy, grid: &[f64], cfg: &WitnessConfig) -> Result<Witness> {
    let t0 = Instant::now();
    let (rungs, grid_index) = ladder(grid, energy.dim(), 2.0);
    let mut rng = crate::rng::stream(cfg.seed, "witness/starts", 0);
    let burn_in = (cfg.sweeps / 5).max(100);
    let pt = PtConfig {
        temps: rungs.clone(),
        n_ladders: cfg.ladders,
        n_sweeps: cfg.sweeps,
        burn_in,
        thin: (cfg.sweeps / 1000).max(1),
        step: 0.5,
        init: None,
        starts: dispersed_starts(energy, cfg.ladders, &mut rng)?,
        moves: crate::mcmc::Moves::for_system(energy),
        seed: crate::rng::derive(cfg.seed, "witness/tempering", 0),
        n_batches: 16,
        flow_every: 0,
        progress: None,
        observables: Vec::new(),
    };
    let run = parallel_tempering(energy, &pt)?;
    Ok(Witness {
        thermo: run.thermo(),
        samples: run.samples,
        round_trips: run.round_trips,
        ladders: cfg.ladders,
        rungs,
        grid_index,
        seconds: t0.elapsed().as_secs_f64(),
        evaluations: run.energy_evaluations,
    })
}

/// What the flow's samples at one temperature missed: the Boltzmann mass M beyond their largest
/// weight (from the witness's configurations) and, to first order in that mass, how much ⟨U⟩
/// and C_V would change if it were counted. An estimate that never reached M estimates
/// E_p[h | not M]; with h centred on the estimate (h = U − Ū for ⟨U⟩, ((U − Ū)² − T² Ĉ_V)/T²
/// for C_V), E_p\[h\] − E_p\[h | not M\] ≈ E_p\[h 1_M\], the mean of h 1_M over the witness's
/// configurations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Missed {
    /// Fraction of the witness's configurations beyond the flow's largest weight.
    pub mass: f64,
    /// Change of ⟨U⟩ the missed configurations make.
    pub u: f64,
    /// Change of C_V the missed configurations make.
    pub cv: f64,
}

impl Missed {
    /// Nothing to compare (no witness configurations at the rung).
    pub const UNKNOWN: Missed = Missed {
        mass: f64::NAN,
        u: f64::NAN,
        cv: f64::NAN,
    };

    /// From Boltzmann samples with energies `u` at `t`, those marked `missed`, and the
    /// estimates ⟨U⟩ = `mu`, C_V = `cv` made without them.
    fn of(u: &[f64], missed: &[bool], t: f64, mu: f64, cv: f64) -> Missed {
        let n = u.len() as f64;
        let m: Vec<f64> = u
            .iter()
            .zip(missed)
            .filter(|(_, &m)| m)
            .map(|(u, _)| *u)
            .collect();
        Missed {
            mass: m.len() as f64 / n,
            u: m.iter().map(|u| u - mu).sum::<f64>() / n,
            cv: m.iter().map(|u| (u - mu).powi(2) - t * t * cv).sum::<f64>() / (n * t * t),
        }
    }
}

impl Witness {
    /// The rung at the grid's temperature number `i`.
    pub fn rung_of(&self, i: usize) -> Option<usize> {
        self.grid_index.iter().position(|&g| g == Some(i))
    }

    /// ⟨O⟩ at rung `k` from its configurations (ladder by ladder), each ladder one replica:
    /// errors from the spread between ladders ([`mean_replicas`]).
    pub fn observable(&self, k: usize, o: &Observable) -> Result<Estimate> {
        let x = self.samples[k].as_standard_layout();
        let (rows, d) = x.dim();
        let per = rows / self.ladders.max(1);
        if per == 0 || d == 0 || self.ladders < 2 {
            return Ok(Estimate::NAN);
        }
        let flat = x.as_slice().unwrap_or_default();
        let values: Vec<f64> = flat.chunks(d).map(|r| o.eval(r, self.rungs[k])).collect();
        let groups: Vec<usize> = (0..rows).map(|r| (r / per).min(self.ladders - 1)).collect();
        mean_replicas(&values, &vec![0.0; rows], &groups, self.ladders)
    }

    /// What the flow's samples missed at rung `k` (see [`Missed`]): the witness configurations
    /// whose log-weight under the flow's estimation proposal (the defensive mixture the sweep
    /// samples from) exceeds `max_log_w`, the largest log-weight among the flow's samples there,
    /// and what they would change in the estimates `est`.
    pub fn missed(
        &self,
        k: usize,
        flow: &Flow,
        energy: &dyn Energy,
        max_log_w: f64,
        est: &crate::estimators::Thermo,
    ) -> Result<Missed> {
        let x = &self.samples[k];
        if x.nrows() == 0 {
            return Ok(Missed::UNKNOWN);
        }
        let t = self.rungs[k];
        let log_q = flow.log_prob_mixture(
            x.view(),
            &[t],
            super::DEFENSIVE_WIDTH,
            super::DEFENSIVE_FRACTION,
        )?;
        let u = energy.energies(x.view())?;
        // A configuration the flow cannot represent at all is missed too.
        let is_missed: Vec<bool> = u
            .iter()
            .zip(&log_q)
            .map(|(u, q)| {
                let l = -u / t - q;
                !l.is_finite() || l > max_log_w
            })
            .collect();
        let u = u.to_vec();
        Ok(Missed::of(&u, &is_missed, t, est.u.value, est.cv.value))
    }

    /// Witness configurations at the rungs on the grid, as forward-KL training data.
    pub fn training_data(&self) -> crate::train::TrainingData {
        let keep: Vec<usize> = (0..self.rungs.len())
            .filter(|&k| self.grid_index[k].is_some())
            .collect();
        let n: usize = keep.iter().map(|&k| self.samples[k].nrows()).sum();
        let d = self.samples.first().map_or(0, |s| s.ncols());
        let mut x = Array2::zeros((n, d));
        let mut temps = Vec::with_capacity(n);
        let mut row = 0;
        for &k in &keep {
            for r in self.samples[k].rows() {
                x.row_mut(row).assign(&r);
                temps.push(self.rungs[k]);
                row += 1;
            }
        }
        crate::train::TrainingData {
            x,
            temps,
            source: "witness parallel-tempering".into(),
            seconds: self.seconds,
            evaluations: self.evaluations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// U ~ Exp(1) at T = 1 (⟨U⟩ = 1, C_V = 1): an estimate that never reached U > 3 (mass
    /// e⁻³ ≈ 5 %) has ⟨U | U ≤ 3⟩ and C_V | U ≤ 3 in closed form; counting the tail back in
    /// recovers the full values to first order in the mass (here to 10 % of the change).
    #[test]
    fn the_missed_tail_moves_the_estimates_by_what_it_holds() {
        use rand::Rng;
        let mut rng = crate::rng::seeded(7);
        let u: Vec<f64> = (0..400_000)
            .map(|_| -(1.0 - rng.random::<f64>()).ln())
            .collect();
        let cut = 3.0f64;
        let a = 1.0 - (-cut).exp();
        // Truncated exponential: mean and variance below the cut.
        let mu = (1.0 - (1.0 + cut) * (-cut).exp()) / a;
        let m2 = (2.0 - (cut * cut + 2.0 * cut + 2.0) * (-cut).exp()) / a;
        let cv = m2 - mu * mu;
        let missed: Vec<bool> = u.iter().map(|&x| x > cut).collect();
        let m = Missed::of(&u, &missed, 1.0, mu, cv);
        assert!((m.mass - (-cut).exp()).abs() < 2e-3, "{m:?}");
        let (du, dcv) = (1.0 - mu, 1.0 - cv);
        assert!((m.u - du).abs() < 0.1 * du, "⟨U⟩ change {} vs {du}", m.u);
        assert!(
            (m.cv - dcv).abs() < 0.1 * dcv,
            "C_V change {} vs {dcv}",
            m.cv
        );
        // Nothing missed, nothing changed.
        let none = Missed::of(&u, &vec![false; u.len()], 1.0, mu, cv);
        assert_eq!((none.mass, none.u, none.cv), (0.0, 0.0, 0.0));
    }

    #[test]
    fn ladder_has_every_grid_point_fills_gaps_and_goes_above_t_max() {
        let grid: Vec<f64> = (0..32).map(|i| 0.5 + 2.5 * i as f64 / 31.0).collect();
        let (rungs, index) = ladder(&grid, 2, 2.0);
        assert!(rungs.windows(2).all(|w| w[1] > w[0]));
        for (i, &t) in grid.iter().enumerate() {
            let k = index.iter().position(|&g| g == Some(i)).unwrap();
            assert_eq!(rungs[k], t);
        }
        assert!(*rungs.last().unwrap() > 3.0 && *rungs.last().unwrap() <= 6.001);
        // A sparse grid gets rungs in between, no two further apart than the ratio.
        let (rungs, index) = ladder(&[0.5, 3.0], 2, 2.0);
        assert_eq!(index.iter().filter(|g| g.is_some()).count(), 2);
        assert!(
            rungs.windows(2).all(|w| w[1] / w[0] <= 1.25 + 1e-9),
            "{rungs:?}"
        );
    }
}
