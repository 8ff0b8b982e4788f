//! Conditional backmapping: a flow q(x_fine | x_cg) that generates fine-grained structures
//! consistent with a coarse-grained one (MATH.md §6, the seed's backmapping loss).
//!
//! The coarse structure is a fixed linear map of the fine coordinates, X = M x: here the
//! centres of mass of consecutive groups of beads of the `bead-chain`. The coarse constraint
//! holds **by construction**: the flow generates internal coordinates r (d − c of them) and
//!
//! ```text
//! x = L X + Q r,    M L = I,  M Q = 0,  QᵀQ = I
//! ```
//!
//! (L copies each bead's group centre to it; Q's columns, per group and axis, are the Helmert
//! basis of the within-group displacements that sum to zero), so M x = X exactly and the map
//! r → x is an isometry onto the fibre {x : M x = X}: log q(x | X) = log q(r | X), and the
//! conditional Boltzmann density on the fibre is e^{−U(L X + Q r)/T} up to Z(X, T). One model
//! serves a range of temperatures [T_min, T_max]: the flow reads X and, over a range, T's
//! normalised logarithm φ(T) (the encoding of [`Conditioning::Temperature`]). It is trained
//! with
//!
//! ```text
//! L = λ_data·(−E_data[log q(r | X, T)]) + λ_E·E_{(X,T)~data, r~q(·|X,T)}[log q(r|X,T) + U(L X + Q r)/T]
//! ```
//!
//! (maximum likelihood on fine samples from parallel tempering at every rung in the range,
//! r = Qᵀ(x − L X), and the reverse KL on the fibre at the temperature each coarse structure
//! came from). The energy gradient enters the graph as an input, as in reverse-KL training.
//! Quality is measured on held-out structures by the consistency error ‖M x − X‖ (rounding
//! only) and two-sample Kolmogorov–Smirnov distances between generated and reference energies,
//! bond angles and distances to the group's centre, raw and reweighted (self-normalised
//! importance weights e^{−U/T}/q per structure).

use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array2, ArrayView1, ArrayView2};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use crate::engine::{Adam, GraphBuilder, Optimizer, Program};
use crate::error::{input_err, Result};
use crate::flows::params::{Declared, Scope};
use crate::flows::{builders, Conditioning, CouplingConfig, Flow, Samples, Transformer};
use crate::mcmc::{parallel_tempering, PtConfig};
use crate::observe::{Observer, Progress, StepMetrics};
use crate::systems::Energy;

/// The coarse-graining matrix of a 2-D chain of `n` beads grouped `group` at a time
/// (row-major, (2·n/group) × 2n): each coarse bead is the mean of its group.
pub fn cg_matrix(n: usize, group: usize) -> Result<Array2<f64>> {
    if group == 0 || !n.is_multiple_of(group) {
        return input_err(format!("{n} beads do not split into groups of {group}"));
    }
    let m = n / group;
    let mut a = Array2::zeros((2 * m, 2 * n));
    for g in 0..m {
        for k in 0..group {
            let b = g * group + k;
            a[[2 * g, 2 * b]] = 1.0 / group as f64;
            a[[2 * g + 1, 2 * b + 1]] = 1.0 / group as f64;
        }
    }
    Ok(a)
}

/// The lift L (d × c) and the fibre basis Q (d × (d − c)) of the coarse map of [`cg_matrix`]:
/// x = L X + Q r has M x = X for every r, and Q has orthonormal columns spanning the
/// displacements within groups that keep every centre (Helmert's: column j of a group and axis
/// is (1, …, 1, −j, 0, …)/√(j(j + 1)) over its beads).
pub fn fibre(n: usize, group: usize) -> Result<(Array2<f64>, Array2<f64>)> {
    let m = cg_matrix(n, group)?;
    let (c, d) = (m.nrows(), m.ncols());
    let mut lift = Array2::zeros((d, c));
    let mut q = Array2::zeros((d, d - c));
    let mut col = 0;
    for g in 0..n / group {
        for axis in 0..2 {
            for k in 0..group {
                lift[[2 * (g * group + k) + axis, 2 * g + axis]] = 1.0;
            }
            for j in 1..group {
                let norm = ((j * (j + 1)) as f64).sqrt();
                for k in 0..j {
                    q[[2 * (g * group + k) + axis, col]] = 1.0 / norm;
                }
                q[[2 * (g * group + j) + axis, col]] = -(j as f64) / norm;
                col += 1;
            }
        }
    }
    Ok((lift, q))
}

/// Settings of a backmapping run.
#[derive(Clone, Debug, Serialize)]
pub struct BackmapConfig {
    /// Temperatures the model is evaluated at; it is trained once over their span
    /// [min, max], with T as a condition of the flow when the span is not a single point.
    pub temps: Vec<f64>,
    /// Beads per coarse bead.
    pub group: usize,
    /// Training steps (20 000: 4–5 min a flow on two cores shared with another job). The raw
    /// energy KS falls with training: 0.39 at 3000 steps to 0.19 at 12 000 (seed 4); at seed 2,
    /// group 2, 0.38 / 0.235 / 0.192 at 3000 / 12 000 / 20 000, where neither a spline
    /// transformer (0.237, twice the time a step), axis-major internal coordinates (0.229) nor
    /// λ_data = 0.05 (0.222) did as much at 12 000. The excess is in the stiff bonds (their
    /// energy 1.7× the reference's at 20 000 steps).
    pub steps: usize,
    /// Batch size.
    pub batch: usize,
    /// λ_data. Both terms aim at the same conditional distribution; the data term's weight
    /// sets how broad the flow stays while it learns (measured at seeds 0 and 4, 3000 steps:
    /// energy KS 0.30–0.33 at 0.2 against 0.37–0.39 at 1; 0 would leave the comparison
    /// without the energy term nothing to train on).
    pub lambda_data: f64,
    /// λ_E (0 trains without the energy term).
    pub lambda_energy: f64,
    /// Parallel-tempering sweeps for the fine data.
    pub pt_sweeps: usize,
    /// Seed.
    pub seed: u64,
    /// Print progress to stderr (each phase, and a training bar).
    pub progress: bool,
}

impl Default for BackmapConfig {
    fn default() -> Self {
        BackmapConfig {
            temps: vec![1.0],
            group: 2,
            steps: 20_000,
            batch: 256,
            lambda_data: 0.2,
            lambda_energy: 1.0,
            pt_sweeps: 20_000,
            seed: 0,
            progress: true,
        }
    }
}

impl BackmapConfig {
    /// The trained range [t_min, t_max]: the span of [`BackmapConfig::temps`], each checked.
    pub fn range(&self) -> Result<(f64, f64)> {
        span(&self.temps)
    }
}

/// The span [min, max] of temperatures, each checked.
fn span(temps: &[f64]) -> Result<(f64, f64)> {
    if temps.is_empty() {
        return input_err("backmapping needs at least one temperature");
    }
    for &t in temps {
        crate::systems::check_temperature(t)?;
    }
    let lo = temps.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = temps.iter().copied().fold(0.0, f64::max);
    Ok((lo, hi))
}

/// Whether `t` lies in [lo, hi] up to rounding (a relative 10⁻⁹); with lo = hi, whether it is
/// that temperature.
fn inside((lo, hi): (f64, f64), t: f64) -> bool {
    t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9)
}

/// Quality of a backmapping flow on held-out structures.
#[derive(Clone, Debug, Serialize)]
pub struct BackmapReport {
    /// RMS of ‖M x − c‖ per coarse bead.
    pub consistency_rms: f64,
    /// Bond rest length (the scale to compare with).
    pub bond_length: f64,
    /// Two-sample KS distance between generated and reference energies.
    pub ks_energy: f64,
    /// Mean energy of generated structures.
    pub energy_mean_generated: f64,
    /// Mean energy of reference structures.
    pub energy_mean_reference: f64,
    /// Median energy of generated structures (one overlapping pair at 10¹⁵ moves the mean,
    /// not the median).
    pub energy_median_generated: f64,
    /// Median energy of reference structures.
    pub energy_median_reference: f64,
    /// Generated structures with a non-finite energy.
    pub bad: usize,
    /// KS distance between the reference energies and the generated ones reweighted to the
    /// conditional Boltzmann distribution (per structure X, [`PER_STRUCTURE`] proposals with
    /// self-normalised weights e^{−U/T}/q(r|X)): exact where the weights are healthy.
    pub ks_energy_reweighted: f64,
    /// Mean over structures of the Kish effective sample size of their weights, as a fraction
    /// of the proposals.
    pub ess_fraction_mean: f64,
    /// The smallest of them.
    pub ess_fraction_min: f64,
    /// Median over structures of the PSIS k̂ of their weights.
    pub pareto_k_median: f64,
    /// Fraction of structures whose k̂ exceeds 0.7 (their reweighted estimates unreliable).
    pub pareto_k_over_0_7: f64,
    /// Structures reweighted.
    pub structures_reweighted: usize,
    /// KS distance of the bond angles (between consecutive bonds, 0 = straight), generated
    /// against reference.
    pub ks_bond_angle: f64,
    /// The same, reweighted.
    pub ks_bond_angle_reweighted: f64,
    /// KS distance of the fine beads' distances to their group's centre.
    pub ks_centre_distance: f64,
    /// The same, reweighted.
    pub ks_centre_distance_reweighted: f64,
}

/// The bond angles of a 2-D chain (n beads, x row-major): the angle between bonds i−1→i and
/// i→i+1 at every interior bead, in [0, π] (0: straight).
pub fn bond_angles(x: &[f64]) -> Vec<f64> {
    let n = x.len() / 2;
    (1..n.saturating_sub(1))
        .map(|i| {
            let (ax, ay) = (x[2 * i] - x[2 * i - 2], x[2 * i + 1] - x[2 * i - 1]);
            let (bx, by) = (x[2 * i + 2] - x[2 * i], x[2 * i + 3] - x[2 * i + 1]);
            (ax * by - ay * bx).atan2(ax * bx + ay * by).abs()
        })
        .collect()
}

/// Every bead's distance to the centre of its group of `group` consecutive beads.
pub fn centre_distances(x: &[f64], group: usize) -> Vec<f64> {
    let n = x.len() / 2;
    (0..n)
        .map(|b| {
            let g0 = b / group * group;
            let (mut cx, mut cy) = (0.0, 0.0);
            for k in g0..g0 + group {
                cx += x[2 * k];
                cy += x[2 * k + 1];
            }
            let (cx, cy) = (cx / group as f64, cy / group as f64);
            (x[2 * b] - cx).hypot(x[2 * b + 1] - cy)
        })
        .collect()
}

/// A per-configuration measure of the rows of `xs` flattened, with each configuration's weight
/// (`None`: equal) shared by its values.
fn measure(
    xs: &Array2<f64>,
    weights: Option<&[f64]>,
    f: &dyn Fn(&[f64]) -> Vec<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut v, mut w) = (Vec::new(), Vec::new());
    for (j, row) in xs.rows().into_iter().enumerate() {
        let m = f(&row.to_vec());
        let share = weights.map_or(1.0 / xs.nrows() as f64, |w| w[j]) / m.len().max(1) as f64;
        w.extend(std::iter::repeat_n(share, m.len()));
        v.extend(m);
    }
    (v, w)
}

/// Proposals per coarse structure for the reweighted comparison.
pub const PER_STRUCTURE: usize = 256;
/// Held-out structures reweighted (at most; the defaults hold out 3200 per temperature). With
/// the first 1000 only, the weighted KS distance's own noise was ≈ 0.06 (1.36 √(2/1000)), the
/// size of what it measures.
pub const REWEIGHTED_STRUCTURES: usize = 4000;

/// The parallel-tempering ladder of the fine data for temperatures `temps`: geometric from
/// their lowest to three times their highest with neighbours at most 3^{1/5} apart (six rungs
/// t..3t at a single temperature), every temperature of `temps` a rung.
pub fn ladder(temps: &[f64]) -> Vec<f64> {
    let lo = temps.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = 3.0 * temps.iter().copied().fold(0.0, f64::max);
    let steps = ((hi / lo).ln() / (3f64.ln() / 5.0) - 1e-9).ceil().max(1.0) as usize;
    let mut rungs = PtConfig::geometric(lo, hi, steps + 1).temps;
    for &t in temps {
        if !rungs.iter().any(|&r| inside((t, t), r)) {
            rungs.push(t);
        }
    }
    rungs.sort_by(f64::total_cmp);
    rungs
}

/// Fine structures per temperature: (T, rows).
pub type Rungs = Vec<(f64, Array2<f64>)>;

/// Fine samples from parallel tempering over [`ladder`]`(temps)`: every rung inside the span of
/// `temps`, coldest first, with its temperature.
pub fn reference_data(
    energy: &dyn Energy,
    temps: &[f64],
    sweeps: usize,
    seed: u64,
) -> Result<Rungs> {
    let (lo, hi) = span(temps)?;
    let mut pt = PtConfig::geometric(lo, 3.0 * hi, 2);
    pt.temps = ladder(temps);
    pt.n_sweeps = sweeps;
    pt.burn_in = sweeps / 5;
    pt.thin = 10;
    pt.n_ladders = 8;
    pt.step = 0.05;
    pt.seed = seed;
    let d = energy.dim();
    // A straight chain along x as the start.
    pt.init = Some(
        (0..d)
            .map(|i| {
                if i % 2 == 0 {
                    (i / 2) as f64 - (d / 4) as f64
                } else {
                    0.0
                }
            })
            .collect(),
    );
    let run = parallel_tempering(energy, &pt)?;
    Ok(run
        .temps
        .into_iter()
        .zip(run.samples)
        .filter(|(t, _)| inside((lo, hi), *t))
        .collect())
}

/// A trained backmapping model: the conditional flow q(r | X, T) of a chain's internal
/// coordinates and the fibre x = L X + Q r it maps them onto.
#[derive(Clone, Debug)]
pub struct Backmapper {
    /// The flow over r, conditioned on the coarse structure X and, when trained over a range
    /// of temperatures, on φ(T), T's normalised logarithm (the encoding of
    /// [`Conditioning::Temperature`]).
    pub flow: Flow,
    /// Beads per coarse bead.
    pub group: usize,
    /// The trained range [t_min, t_max] (one point: the flow reads X alone).
    pub range: (f64, f64),
    m: Array2<f64>,
    lift: Array2<f64>,
    q: Array2<f64>,
}

impl Backmapper {
    fn new(flow: Flow, n_beads: usize, group: usize, range: (f64, f64)) -> Result<Self> {
        let (lift, q) = fibre(n_beads, group)?;
        Ok(Backmapper {
            flow,
            group,
            range,
            m: cg_matrix(n_beads, group)?,
            lift,
            q,
        })
    }

    /// Fine coordinates per structure.
    pub fn fine_dim(&self) -> usize {
        self.m.ncols()
    }

    /// The coarse structures X = M x of fine structures (rows).
    pub fn coarse(&self, x: ArrayView2<f64>) -> Array2<f64> {
        x.dot(&self.m.t())
    }

    /// Condition features the flow reads beyond X: φ(T) when trained over a range.
    fn t_features(&self) -> usize {
        (self.range.1 > self.range.0) as usize
    }

    /// φ(T), or an error naming the range when T lies outside it.
    fn t_feature(&self, t: f64) -> Result<Option<f64>> {
        crate::systems::check_temperature(t)?;
        let (lo, hi) = self.range;
        if !inside((lo, hi), t) {
            return input_err(format!(
                "the backmapping model was trained over T ∈ [{lo}, {hi}], not at T = {t}"
            ));
        }
        Ok((self.t_features() == 1).then(|| {
            Conditioning::Temperature {
                t_min: lo,
                t_max: hi,
            }
            .features(&[t])[0]
        }))
    }

    /// The flow's conditions, one row per coarse structure of `cg` at temperature `t`.
    fn conditions(&self, cg: ArrayView2<f64>, t: f64) -> Result<Vec<f64>> {
        if cg.ncols() != self.m.nrows() {
            return input_err(format!(
                "coarse structures have {} coordinates, the model maps {}",
                cg.ncols(),
                self.m.nrows()
            ));
        }
        let phi = self.t_feature(t)?;
        let mut out = Vec::with_capacity(cg.len() + cg.nrows());
        for row in cg.rows() {
            out.extend(row.iter());
            out.extend(phi);
        }
        Ok(out)
    }

    /// `per` fine structures x = L X + Q r for each coarse structure of `cg` (rows; structure i's
    /// draws are rows i·per..(i + 1)·per) at temperature `t`, with log q(r | X, T), which is
    /// log q(x | X, T) on the fibre (r → x is an isometry onto it).
    pub fn sample(
        &self,
        cg: ArrayView2<f64>,
        per: usize,
        t: f64,
        rng: &mut impl Rng,
    ) -> Result<Samples> {
        let rep: Vec<usize> = (0..cg.nrows() * per).map(|j| j / per).collect();
        let cg = cg.select(ndarray::Axis(0), &rep);
        let conds = self.conditions(cg.view(), t)?;
        let s = self.flow.sample_and_log_prob(cg.nrows(), &conds, rng)?;
        Ok(Samples {
            x: cg.dot(&self.lift.t()) + s.x.dot(&self.q.t()),
            log_q: s.log_q,
        })
    }
}

/// Adam's learning rate in backmap training (before [`late_decay`]).
const LEARNING_RATE: f64 = 1e-3;

/// The learning rate's factor at `step` of `steps`: 1, then falling linearly to a tenth over
/// the last 30 % of the steps. Group 2, seed 2, 20 000 steps: raw energy KS 0.192 → 0.171 and
/// ESS 18 → 26 % against a constant rate (the parameters settle instead of jittering at the
/// rate's noise; a cosine schedule over all the steps had done worse than a constant rate at
/// 12 000, 0.274 against 0.233, by learning less early).
fn late_decay(step: usize, steps: usize) -> f64 {
    let start = 0.7 * steps as f64;
    let x = ((step as f64 - start) / (0.3 * steps as f64)).clamp(0.0, 1.0);
    1.0 - 0.9 * x
}

/// Train a backmapping flow on fine structures `data`: per temperature of the data (rungs of
/// [`reference_data`]) its rows. Every batch row draws a structure x of the data at its
/// temperature T: the data term fits q(r(x) | X(x), T), and the energy term draws r ~ q(· | X, T)
/// and weighs U(L X + Q r) by 1/T, so each coarse structure is backmapped at the temperature
/// it came from.
pub fn train_backmap(
    energy: &dyn Energy,
    data: &[(f64, Array2<f64>)],
    cfg: &BackmapConfig,
) -> Result<Backmapper> {
    let d = energy.dim();
    let range = cfg.range()?;
    for (t, rows) in data {
        crate::systems::check_batch(d, &rows.view())?;
        if !inside(range, *t) {
            return input_err(format!(
                "data at T = {t} lies outside the trained range [{}, {}]",
                range.0, range.1
            ));
        }
    }
    let rows: Vec<(f64, ArrayView1<f64>)> = data
        .iter()
        .flat_map(|(t, x)| x.rows().into_iter().map(move |r| (*t, r)))
        .collect();
    if rows.is_empty() {
        return input_err("backmapping needs fine structures to learn from");
    }
    let fc = CouplingConfig {
        layers: 8,
        hidden: 64,
        transformer: Transformer::Affine,
        seed: cfg.seed,
        ..Default::default()
    };
    let (n_beads, group) = (d / 2, cfg.group);
    let (c, f) = (
        cg_matrix(n_beads, group)?.nrows(),
        fibre(n_beads, group)?.1.ncols(),
    );
    let k = c + (range.1 > range.0) as usize;
    let flow = builders::coupling_flow(f, Conditioning::Features(k), &fc)?;
    let mut model = Backmapper::new(flow, n_beads, group, range)?;
    let g = GraphBuilder::new();
    let (outs, loss) = {
        let declared = Declared::default();
        let s = Scope::root(&g, &declared, true);
        let rd = g.batch_input("r_data", &[f]);
        let cd = g.batch_input("c_data", &[k]);
        let z = g.batch_input("z", &[f]);
        let gu = g.batch_input("grad_u", &[d]);
        let w = g.batch_input("w", &[]);
        let beta = g.batch_input("beta", &[]);
        // Lᵀ with a zero row for φ(T): x = L X + Q r from the conditions.
        let mut lt = Array2::<f64>::zeros((k, d));
        lt.slice_mut(ndarray::s![..c, ..]).assign(&model.lift.t());
        let lt = g.constant_tensor(&[k, d], lt.iter().copied().collect());
        let qt = g.constant_tensor(&[f, d], model.q.t().iter().copied().collect());
        let (_, lqd) = model.flow.build_log_prob(&s, rd, Some(cd));
        let (r, lq) = model.flow.build_sample(&s, z, Some(cd));
        // x = L X + Q r: on the fibre of X by construction.
        let x = cd.matmul(lt) + r.matmul(qt);
        let reverse = (lq + (x * gu).sum(1) * beta) * w;
        let loss =
            lqd.mean(0).mul_scalar(-cfg.lambda_data) + reverse.sum(0).mul_scalar(cfg.lambda_energy);
        ([x.output("x")], loss.output("loss"))
    };
    let mut prog: Program<f32> = Program::compile(g, &outs, Some(loss))?.on_selected_device()?;
    let mut lr = LEARNING_RATE;
    let mut opt = Adam::new(lr).with_clip(10.0);
    let mut rng = crate::rng::seeded(cfg.seed);
    let (b, n) = (cfg.batch, rows.len());
    let (mut rd, mut cd, mut z, mut gu, mut w, mut beta) = (
        vec![0f32; b * f],
        vec![0f32; b * k],
        vec![0f32; b * f],
        vec![0f32; b * d],
        vec![0f32; b],
        vec![0f32; b],
    );
    let mut grad = vec![0.0; d];
    let mut xr = vec![0.0; d];
    let mut bar = Progress::new(2.0);
    let t0 = Instant::now();
    // Every data row's conditions, internal coordinates r = Qᵀ (x − L X) and 1/T, once: the
    // batches below only copy them.
    let (mut conds, mut rs, mut betas) = (Vec::new(), Vec::new(), Vec::new());
    for (t, row) in &rows {
        let cg = model.m.dot(row);
        let r = model.q.t().dot(&(row - &model.lift.dot(&cg)));
        let cond = model.conditions(cg.view().insert_axis(ndarray::Axis(0)), *t)?;
        conds.extend(cond.iter().map(|&v| v as f32));
        rs.extend(r.iter().map(|&v| v as f32));
        betas.push((1.0 / t) as f32);
    }
    for step in 1..=cfg.steps {
        if crate::observe::interrupted() {
            break;
        }
        opt.set_lr(lr * late_decay(step, cfg.steps));
        for i in 0..b {
            let j = rng.random_range(0..n);
            cd[i * k..(i + 1) * k].copy_from_slice(&conds[j * k..(j + 1) * k]);
            rd[i * f..(i + 1) * f].copy_from_slice(&rs[j * f..(j + 1) * f]);
            beta[i] = betas[j];
        }
        for v in z.iter_mut() {
            *v = rng.sample::<f32, _>(StandardNormal);
        }
        let inputs = [
            ("r_data", &rd[..]),
            ("c_data", &cd[..]),
            ("z", &z[..]),
            ("grad_u", &gu[..]),
            ("w", &w[..]),
            ("beta", &beta[..]),
        ];
        let loss = if cfg.lambda_energy > 0.0 {
            // The flow's forward half first; ∇U and the weights are late inputs, set once the
            // host has evaluated the energy at the sampled x.
            let fwd = prog.step_begin(&inputs, &["grad_u", "w"])?;
            let xs = fwd.get("x")?;
            let mut good = 0;
            for i in 0..b {
                for j in 0..d {
                    xr[j] = xs[i * d + j] as f64;
                }
                let u = energy.energy_grad(&xr, &mut grad);
                let ok = u.is_finite() && grad.iter().all(|g| g.is_finite() && g.abs() < 1e6);
                for j in 0..d {
                    gu[i * d + j] = if ok { grad[j] as f32 } else { 0.0 };
                }
                w[i] = ok as u8 as f32;
                good += ok as usize;
            }
            for v in w.iter_mut() {
                *v /= good.max(1) as f32;
            }
            prog.step_finish(&[("grad_u", &gu), ("w", &w)], &mut opt)
        } else {
            prog.step(&inputs, &mut opt).map(|(loss, _)| loss)
        };
        let event = match &loss {
            Ok(_) => None,
            Err(e) => {
                lr *= 0.5;
                Some(format!("step discarded ({e}); learning rate halved"))
            }
        };
        if cfg.progress {
            let seconds = t0.elapsed().as_secs_f64();
            bar.observe(&StepMetrics {
                step,
                seconds,
                progress: step as f64 / cfg.steps as f64,
                loss: *loss.as_ref().unwrap_or(&f64::NAN),
                warm_start: false,
                lr: opt.lr(),
                ess_by_bin: Vec::new(),
                samples_per_s: (step * b) as f64 / seconds.max(1e-9),
                bad_samples: 0,
                event,
                acceptance: None,
            });
        }
    }
    model.flow.read_params(&mut prog)?;
    Ok(model)
}

/// Two-sample Kolmogorov–Smirnov distance.
pub fn ks_distance(a: &[f64], b: &[f64]) -> f64 {
    let mut a: Vec<f64> = a.iter().copied().filter(|v| v.is_finite()).collect();
    let mut b: Vec<f64> = b.iter().copied().filter(|v| v.is_finite()).collect();
    a.sort_by(|x, y| x.partial_cmp(y).unwrap());
    b.sort_by(|x, y| x.partial_cmp(y).unwrap());
    // Step through each distinct value, advancing both empirical CDFs past it (ties!).
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let v = a[i].min(b[j]);
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// Two-sample Kolmogorov–Smirnov distance between `a` with weights `wa` (summing to 1; a
/// weighted empirical distribution) and `b` (equal weights). Non-finite values of `a` count
/// with their weight (at +∞); of `b` they are dropped.
pub fn ks_weighted(a: &[f64], wa: &[f64], b: &[f64]) -> f64 {
    let mut a: Vec<(f64, f64)> = a
        .iter()
        .zip(wa)
        .map(|(&v, &w)| (if v.is_nan() { f64::INFINITY } else { v }, w))
        .collect();
    let mut b: Vec<f64> = b.iter().copied().filter(|v| v.is_finite()).collect();
    a.sort_by(|x, y| x.0.total_cmp(&y.0));
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut fa, mut d) = (0, 0, 0.0f64, 0.0f64);
    while i < a.len() && j < b.len() {
        let v = a[i].0.min(b[j]);
        while i < a.len() && a[i].0 <= v {
            fa += a[i].1;
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        d = d.max((fa - j as f64 / b.len() as f64).abs());
    }
    d
}

/// Fine structures reweighted to the conditional Boltzmann distribution p(x | X, T).
#[derive(Clone, Debug)]
pub struct Reweighted {
    /// The proposals x = L X + Q r, `per` rows per coarse structure.
    pub x: Array2<f64>,
    /// Their energies.
    pub u: Vec<f64>,
    /// Self-normalised weights ∝ e^{−U/T}/q(r | X, T) within each structure, each structure's
    /// summing to 1/structures (all of them to 1).
    pub weights: Vec<f64>,
    /// Per structure: Kish's effective sample size as a fraction of the proposals.
    pub ess: Vec<f64>,
    /// Per structure: PSIS k̂ of the weights (> 0.7: that structure's estimates unreliable).
    pub pareto_k: Vec<f64>,
}

/// `per` proposals from `model` for each coarse structure of `cg` (rows) at temperature `t`,
/// weighted to the conditional Boltzmann distribution: exact as `per` grows where the
/// weights are healthy (ESS, k̂), and flagged where not. (The sweep's defensive mixture,
/// 0.9 q + 0.1 q with a 1.2× wider base, was tried here: the reweighted energy KS came out
/// worse, 0.107–0.142 against 0.091–0.130 at T = 1.3, seeds 1–3, 2500 steps; the weights' fault
/// is not light tails.) A structure whose proposals all have
/// non-finite weights gets weight 0, ESS 0 and k̂ = ∞.
pub fn reweight(
    model: &Backmapper,
    energy: &dyn Energy,
    cg: ArrayView2<f64>,
    per: usize,
    t: f64,
    rng: &mut impl Rng,
) -> Result<Reweighted> {
    let (d, n, k) = (energy.dim(), cg.nrows(), per);
    let s = model.sample(cg, k, t, rng)?;
    let flat: Vec<f64> = s.x.iter().copied().collect();
    let u = crate::systems::parallel_energies(energy, &flat, d);
    let mut weights = vec![0.0; n * k];
    let (mut ess, mut pareto_k) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let lw: Vec<f64> = (i * k..(i + 1) * k)
            .map(|j| {
                let l = -u[j] / t - s.log_q[j];
                if l.is_finite() {
                    l
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        let top = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !top.is_finite() {
            ess.push(0.0);
            pareto_k.push(f64::INFINITY);
            continue;
        }
        let w: Vec<f64> = lw.iter().map(|l| (l - top).exp()).collect();
        let (sum, sq) = (w.iter().sum::<f64>(), w.iter().map(|v| v * v).sum::<f64>());
        ess.push(sum * sum / sq / k as f64);
        pareto_k.push(crate::estimators::psis::pareto_k(&w));
        for (dst, v) in weights[i * k..(i + 1) * k].iter_mut().zip(&w) {
            *dst = v / sum / n as f64;
        }
    }
    Ok(Reweighted {
        x: s.x,
        u,
        weights,
        ess,
        pareto_k,
    })
}

/// Generate one fine structure per held-out structure's coarse image at temperature `t` and
/// compare; then [`PER_STRUCTURE`] per structure (the first [`REWEIGHTED_STRUCTURES`]),
/// reweighted to the conditional Boltzmann distribution at `t`, and compare again.
pub fn evaluate(
    model: &Backmapper,
    energy: &dyn Energy,
    test: ArrayView2<f64>,
    bond_length: f64,
    t: f64,
    seed: u64,
) -> Result<BackmapReport> {
    let d = energy.dim();
    if model.fine_dim() != d {
        return input_err(format!(
            "the backmapping model generates {} coordinates, the system has {d}",
            model.fine_dim()
        ));
    }
    crate::systems::check_batch(d, &test)?;
    let group = model.group;
    let cg = model.coarse(test);
    let mut rng = crate::rng::seeded(seed);
    let gen = model.sample(cg.view(), 1, t, &mut rng)?.x;
    let back = model.coarse(gen.view());
    let n_cg = (cg.ncols() / 2) as f64;
    let sq: f64 = (&back - &cg).iter().map(|v| v * v).sum::<f64>() / (test.nrows() as f64 * n_cg);
    let eg: Vec<f64> = gen
        .rows()
        .into_iter()
        .map(|r| energy.energy(&r.to_vec()))
        .collect();
    let er: Vec<f64> = test
        .rows()
        .into_iter()
        .map(|r| energy.energy(&r.to_vec()))
        .collect();
    let finite = |v: &[f64]| {
        let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        f.iter().sum::<f64>() / f.len().max(1) as f64
    };
    let median = |v: &[f64]| {
        let mut f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        f.sort_by(f64::total_cmp);
        f.get(f.len() / 2).copied().unwrap_or(f64::NAN)
    };
    // Reweighted: per structure, proposals with weights e^{−U/T}/q(r|X), normalised per X.
    let nw = test.nrows().min(REWEIGHTED_STRUCTURES);
    let rw = reweight(
        model,
        energy,
        cg.slice(ndarray::s![..nw, ..]),
        PER_STRUCTURE,
        t,
        &mut rng,
    )?;
    let (xs, u, weights, ess, khat) = (rw.x, rw.u, rw.weights, rw.ess, rw.pareto_k);
    let mut sorted_k: Vec<f64> = khat.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted_k.sort_by(f64::total_cmp);
    // Bond angles and distances to the centre: generated (one per structure, and reweighted)
    // against the reference structures.
    let reference = test.to_owned();
    let first = test.slice(ndarray::s![..nw, ..]).to_owned();
    let centre = move |x: &[f64]| centre_distances(x, group);
    let ks_of = |f: &dyn Fn(&[f64]) -> Vec<f64>| {
        let (r, _) = measure(&reference, None, f);
        let (r_first, _) = measure(&first, None, f);
        let (g, _) = measure(&gen, None, f);
        let (gw, ww) = measure(&xs, Some(&weights), f);
        (ks_distance(&g, &r), ks_weighted(&gw, &ww, &r_first))
    };
    let (ks_angle, ks_angle_w) = ks_of(&bond_angles);
    let (ks_centre, ks_centre_w) = ks_of(&centre);
    Ok(BackmapReport {
        ks_bond_angle: ks_angle,
        ks_bond_angle_reweighted: ks_angle_w,
        ks_centre_distance: ks_centre,
        ks_centre_distance_reweighted: ks_centre_w,
        ks_energy_reweighted: ks_weighted(&u, &weights, &er[..nw]),
        ess_fraction_mean: ess.iter().sum::<f64>() / nw.max(1) as f64,
        ess_fraction_min: ess.iter().copied().fold(f64::INFINITY, f64::min),
        pareto_k_median: sorted_k
            .get(sorted_k.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        pareto_k_over_0_7: khat.iter().filter(|&&v| v > 0.7).count() as f64 / nw.max(1) as f64,
        structures_reweighted: nw,
        consistency_rms: sq.sqrt(),
        bond_length,
        ks_energy: ks_distance(&eg, &er),
        energy_mean_generated: finite(&eg),
        energy_mean_reference: finite(&er),
        energy_median_generated: median(&eg),
        energy_median_reference: median(&er),
        bad: eg.iter().filter(|v| !v.is_finite()).count(),
    })
}

/// Reference data split per rung into the structures to train on (the first four fifths) and
/// the held-out ones (the last fifth): (train, held out).
pub fn hold_out(data: &[(f64, Array2<f64>)]) -> (Rungs, Rungs) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (t, x) in data {
        let n = x.nrows();
        train.push((*t, x.slice(ndarray::s![..n * 4 / 5, ..]).to_owned()));
        test.push((*t, x.slice(ndarray::s![n * 4 / 5.., ..]).to_owned()));
    }
    (train, test)
}

/// The comparison at one temperature of a [`compare`].
#[derive(Clone, Debug, Serialize)]
pub struct BackmapAt {
    /// Temperature.
    pub t: f64,
    /// The flow trained with the energy term.
    pub with_energy_term: BackmapReport,
    /// The flow trained on data alone.
    pub without_energy_term: BackmapReport,
}

/// [`compare`] on the bead chain with these `key=value` parameters (the `backmap` command).
pub fn compare_bead_chain(params: &[String], cfg: &BackmapConfig) -> Result<Vec<BackmapAt>> {
    cfg.range()?;
    let chain = crate::systems::BeadChain::from_params(&crate::systems::Params::parse(params)?)?;
    // The reference data: 8 ladders per rung kept every 10th sweep.
    let rows = 8 * ladder(&cfg.temps).len() * (cfg.pt_sweeps / 10 + 1);
    crate::memory::check(
        "the reference data",
        crate::memory::sample_rows(rows, chain.dim()),
    )?;
    let l0 = chain.l0;
    compare(Arc::new(chain), cfg, l0)
}

/// Reference data over the temperatures' span, one model with and one without the energy
/// term trained once over it, and their reports on held-out structures at each temperature of
/// `cfg.temps`.
pub fn compare(
    energy: Arc<dyn Energy>,
    cfg: &BackmapConfig,
    bond_length: f64,
) -> Result<Vec<BackmapAt>> {
    // Settings first: a wrong group or temperature is an error before minutes of sampling.
    cfg.range()?;
    cg_matrix(energy.dim() / 2, cfg.group)?;
    let say = |what: String| {
        if cfg.progress {
            eprintln!("[backmap] {what}");
        }
    };
    say(format!(
        "reference data: parallel tempering over {} rungs, {} sweeps",
        ladder(&cfg.temps).len(),
        cfg.pt_sweeps
    ));
    let data = reference_data(
        energy.as_ref(),
        &cfg.temps,
        cfg.pt_sweeps,
        crate::rng::derive(cfg.seed, "backmap/reference", 0),
    )?;
    let (train, test) = hold_out(&data);
    say(format!(
        "training with the energy term ({} steps), then on data alone",
        cfg.steps
    ));
    let with = train_backmap(energy.as_ref(), &train, cfg)?;
    let without = train_backmap(
        energy.as_ref(),
        &train,
        &BackmapConfig {
            lambda_energy: 0.0,
            ..cfg.clone()
        },
    )?;
    cfg.temps
        .iter()
        .map(|&t| {
            let Some((_, held)) = test.iter().find(|(r, _)| inside((t, t), *r)) else {
                return input_err(format!("no reference data at T = {t}"));
            };
            say(format!(
                "comparing at T = {t} on {} held-out structures ({PER_STRUCTURE} proposals each for up to {REWEIGHTED_STRUCTURES})",
                held.nrows()
            ));
            let eval = |model| {
                evaluate(
                    model,
                    energy.as_ref(),
                    held.view(),
                    bond_length,
                    t,
                    crate::rng::derive(cfg.seed, "backmap/evaluate", 0),
                )
            };
            Ok(BackmapAt {
                t,
                with_energy_term: eval(&with)?,
                without_energy_term: eval(&without)?,
            })
        })
        .collect()
}
