//! Retraining where importance sampling fails (`--repairs` rounds, see the module docs of
//! [`super`]): continued training with forward KL on the witness's configurations and on
//! importance-resampled flow samples, a fresh witness and new estimates; a round that leaves
//! fewer temperatures trusted is undone.

use std::time::Instant;

use super::checks;
use super::methods::importance::estimate_rounds;
use super::model::{sweep_training, train_observed};
use super::witness::Witness;
use super::{State, Sweeper, DEFENSIVE_FRACTION, DEFENSIVE_WIDTH};
use crate::error::{Error, Result};
use crate::flows::Flow;
use crate::systems::Energy;
use crate::train::TrainingData;

/// Sampling–importance–resampling at each of `temps`: 50 000 flow samples, 10 000 of them
/// drawn again with probability ∝ weight, so that regions the flow under-covers come back
/// in proportion to their Boltzmann mass: forward-KL data ≈ p(·|T) where the flow is weak.
fn resampled(flow: &Flow, energy: &dyn Energy, temps: &[f64], seed: u64) -> Result<TrainingData> {
    use rand::Rng;
    let t0 = Instant::now();
    let (n_draw, n_keep) = (50_000, 10_000);
    let d = energy.dim();
    let mut rows = Vec::with_capacity(temps.len() * n_keep * d);
    let mut out_t = Vec::with_capacity(temps.len() * n_keep);
    let mut rng = crate::rng::seeded(seed);
    for &t in temps {
        let s = flow.sample_mixture(n_draw, &[t], DEFENSIVE_WIDTH, DEFENSIVE_FRACTION, &mut rng)?;
        let u = energy.energies(s.x.view())?.to_vec();
        let w = crate::estimators::Weights::boltzmann(&u, &s.log_q, t)?;
        let cum: Vec<f64> = w
            .raw()
            .iter()
            .scan(0.0, |acc, v| {
                *acc += v;
                Some(*acc)
            })
            .collect();
        let total = cum[cum.len() - 1];
        for _ in 0..n_keep {
            let r = rng.random::<f64>() * total;
            let i = cum.partition_point(|c| *c < r).min(n_draw - 1);
            rows.extend(s.x.row(i).iter());
            out_t.push(t);
        }
    }
    let x = ndarray::Array2::from_shape_vec((out_t.len(), d), rows)
        .map_err(|e| Error::Engine(e.to_string()))?;
    Ok(TrainingData {
        x,
        temps: out_t,
        source: "importance-resampled flow samples".into(),
        seconds: t0.elapsed().as_secs_f64(),
        evaluations: temps.len() * n_draw,
    })
}

/// The temperature range to retrain on: the failing temperatures with one grid step either
/// side.
fn failing_range(temps: &[f64], trusted: &[bool]) -> Option<(f64, f64)> {
    let bad: Vec<usize> = (0..temps.len()).filter(|&i| !trusted[i]).collect();
    let (&first, &last) = (bad.first()?, bad.last()?);
    let lo = temps[first.saturating_sub(1)];
    let hi = temps[(last + 1).min(temps.len() - 1)];
    Some((lo, hi))
}

/// One repair round: continued training (half the training budget, lr 5·10⁻⁴) with reverse KL
/// on the failing range and forward KL (weight 2) on the witness's configurations and on
/// importance-resampled flow samples at the failing temperatures; then a fresh witness (the
/// flow has seen the old one's configurations), new estimates and checks. When fewer
/// temperatures are trusted after the round than before, the flow, witness and estimates from
/// before it are restored. Returns false (no further rounds) when no temperature fails, there
/// is no witness, or the round was undone.
pub(super) fn retrain(sw: &Sweeper, st: &mut State, r: usize) -> Result<bool> {
    let (cfg, temps) = (sw.cfg, &sw.temps);
    let trusted: Vec<bool> = st.checks.iter().map(checks::all_pass).collect();
    let Some((lo, hi)) = failing_range(temps, &trusted) else {
        return Ok(false);
    };
    let Some(mut data) = st.witness.as_ref().map(Witness::training_data) else {
        return Ok(false);
    };
    let failing: Vec<f64> = (0..temps.len())
        .filter(|&i| !trusted[i])
        .map(|i| temps[i])
        .collect();
    let sir = resampled(
        &st.flow,
        sw.energy,
        &failing,
        crate::rng::derive(sw.seed, "repair/resample", r as u64),
    )?;
    let n_sir = sir.temps.len();
    data.x = ndarray::concatenate(ndarray::Axis(0), &[data.x.view(), sir.x.view()])
        .map_err(|e| Error::Engine(e.to_string()))?;
    data.temps.extend(sir.temps);
    let n_data = data.temps.len();
    let before = trusted.iter().filter(|&&t| t).count();
    let mut tc = sweep_training(lo, hi);
    tc.seconds = cfg.train_seconds.map(|s| s / 2.0);
    tc.steps = cfg.train_steps.map(|s| (s / 2).max(1));
    if tc.seconds.is_none() && tc.steps.is_none() {
        tc.steps = Some(super::default_train_steps(sw.energy) / 2);
    }
    tc.batch = super::model::recipe_batch(sw.energy, &tc);
    tc.warm_fraction = 0.0;
    tc.forward_weight = 2.0;
    // Continued training: start where the first schedule's learning rate had come down to.
    tc.lr = 5e-4;
    tc.seed = crate::rng::derive(cfg.seed, "repair/training", r as u64);
    if cfg.progress {
        eprintln!(
            "[sweep] repair {}: {} of {} temperatures fail; training on T ∈ [{lo:.3}, {hi:.3}] with the witness's configurations",
            r + 1,
            temps.len() - before,
            temps.len()
        );
    }
    // A repair must not make things worse: keep what to go back to.
    let saved = st.saved();
    let rep = train_observed(
        &mut st.flow,
        sw.energy,
        &tc,
        Some(data),
        cfg.progress,
        &mut st.history,
    )?;
    st.train.steps += rep.steps;
    st.train.seconds += rep.seconds;
    st.train.final_loss = rep.final_loss;
    st.witness = sw.witness(1 + r as u64)?;
    st.rounds = estimate_rounds(
        &st.flow,
        sw.energy,
        temps,
        cfg,
        crate::rng::derive(sw.seed, "repair/estimates", r as u64),
    )?;
    st.estimate_seconds += st.rounds.seconds;
    let what = format!(
        "continued training {} steps ({:.1} s) on T ∈ [{lo:.3}, {hi:.3}] with forward KL on {n_data} configurations (witness, and {n_sir} resampled by weight at the failing temperatures), fresh witness, re-estimated{}",
        rep.steps,
        rep.seconds,
        st.rounds
            .stopped_note(temps)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
    );
    super::settle(sw, st, saved, &what)
}
