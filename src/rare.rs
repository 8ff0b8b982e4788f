//! Rare events by importance sampling with a flow trained toward the event (MATH.md §7).
//!
//! For an event A and p_T ∝ e^{−U/T}: P(A) = Z_A/Z with Z_A = ∫_A e^{−U/T}. A flow q_A is
//! trained (reverse KL, as in a sweep) on the softly restricted energy
//! U_A(x) = U(x) + κ·d_A(x)², d_A the distance outside A, so it puts most of its mass in A; a
//! second flow q is trained on U itself. With independent samples,
//!
//! ```text
//! Ẑ_A = mean_i[ 1_A(x_i) e^{−U(x_i)/T}/q_A(x_i) ],   Ẑ = mean_j[ e^{−U(x_j)/T}/q(x_j) ],
//! P̂ = Ẑ_A/Ẑ,   (se/P̂)² = Var(Ẑ_A)/(N_A Ẑ_A²) + Var(Ẑ)/(N Ẑ²)   (delta method)
//! ```
//!
//! Crude Monte Carlo has variance p(1 − p) per energy evaluation; the reported variance
//! reduction is p(1 − p) / (se² · evaluations), evaluations counting both sample sets.

use std::sync::Arc;

use serde::Serialize;

use crate::error::{input_err, Error, Result};
use crate::flows::default_flow;
use crate::flows::Flow;
use crate::systems::{check_temperature, Energy};
use crate::train::{train_new, Observer, Progress, TrainConfig};

/// An event: a coordinate above/below a threshold, or the energy above one.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Event {
    /// x_i > a
    Above(usize, f64),
    /// x_i < a
    Below(usize, f64),
    /// U(x) > u*
    EnergyAbove(f64),
}

impl Event {
    /// Parse `x0>1.5`, `x1<-2` or `U>3`.
    pub fn parse(s: &str) -> Result<Event> {
        let s = s.replace(' ', "");
        let bad = || Error::Input(format!("event {s:?} is not like x0>1.5, x1<-2 or U>3"));
        let (lhs, rhs, above) = if let Some((a, b)) = s.split_once('>') {
            (a.to_string(), b.to_string(), true)
        } else if let Some((a, b)) = s.split_once('<') {
            (a.to_string(), b.to_string(), false)
        } else {
            return Err(bad());
        };
        let v: f64 = rhs.parse().map_err(|_| bad())?;
        if !v.is_finite() {
            return Err(bad());
        }
        if lhs == "U" {
            return if above {
                Ok(Event::EnergyAbove(v))
            } else {
                Err(bad())
            };
        }
        let i: usize = lhs
            .strip_prefix('x')
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
        Ok(if above {
            Event::Above(i, v)
        } else {
            Event::Below(i, v)
        })
    }

    fn check(&self, dim: usize) -> Result<()> {
        match self {
            Event::Above(i, _) | Event::Below(i, _) if *i >= dim => input_err(format!(
                "event uses x{i} but the system has {dim} coordinates"
            )),
            _ => Ok(()),
        }
    }

    /// Whether x (with energy u) is in the event.
    pub fn contains(&self, x: &[f64], u: f64) -> bool {
        match *self {
            Event::Above(i, a) => x[i] > a,
            Event::Below(i, a) => x[i] < a,
            Event::EnergyAbove(a) => u > a,
        }
    }
}

/// U + κ·(distance outside the event)².
struct Restricted {
    inner: Arc<dyn Energy>,
    event: Event,
    kappa: f64,
}

impl Energy for Restricted {
    fn name(&self) -> &str {
        "restricted"
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn params(&self) -> Vec<(String, f64)> {
        self.inner.params()
    }
    fn energy(&self, x: &[f64]) -> f64 {
        let mut g = vec![0.0; x.len()];
        self.energy_grad(x, &mut g)
    }
    fn energy_grad(&self, x: &[f64], g: &mut [f64]) -> f64 {
        let u = self.inner.energy_grad(x, g);
        let k = self.kappa;
        match self.event {
            Event::Above(i, a) => {
                let d = (a - x[i]).max(0.0);
                g[i] -= 2.0 * k * d;
                u + k * d * d
            }
            Event::Below(i, a) => {
                let d = (x[i] - a).max(0.0);
                g[i] += 2.0 * k * d;
                u + k * d * d
            }
            Event::EnergyAbove(a) => {
                let d = (a - u).max(0.0);
                for gi in g.iter_mut() {
                    *gi *= 1.0 - 2.0 * k * d;
                }
                u + k * d * d
            }
        }
    }
    fn bounds(&self) -> Option<Vec<(f64, f64)>> {
        self.inner.bounds()
    }
}

/// Result of a rare-event estimate.
#[derive(Clone, Debug, Serialize)]
pub struct RareResult {
    /// The event, as written.
    pub event: String,
    /// Temperature.
    pub temperature: f64,
    /// Estimated P(A).
    pub p: f64,
    /// Its standard error.
    pub p_se: f64,
    /// Exact P(A) by quadrature (1-D/2-D systems), or null.
    pub p_exact: Option<f64>,
    /// Crude-MC variance per evaluation over this estimator's variance per evaluation.
    pub variance_reduction: f64,
    /// Energy evaluations used by the estimate (both sample sets).
    pub energy_evaluations: usize,
    /// Fraction of q_A's samples inside the event.
    pub fraction_in_event: f64,
    /// Training seconds (both flows).
    pub train_seconds: f64,
}

/// Mean of `w` and its squared standard error, in a scale-free way: (log mean, rel var).
fn log_mean_and_rel_var(log_w: &[f64]) -> (f64, f64) {
    let n = log_w.len() as f64;
    let mx = log_w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = log_w
        .iter()
        .map(|l| if l.is_finite() { (l - mx).exp() } else { 0.0 })
        .collect();
    let m = w.iter().sum::<f64>() / n;
    let var = w.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (mx + m.ln(), var / (n * m * m))
}

/// How a rare-event estimate is made, beyond the event and the temperature.
#[derive(Clone, Debug)]
pub struct RareConfig {
    /// Samples per flow.
    pub samples: usize,
    /// Training budget per trained flow, in steps.
    pub train_steps: usize,
    /// A wall-time limit per trained flow instead (the result then depends on the machine).
    pub train_seconds: Option<f64>,
    /// Seed.
    pub seed: u64,
    /// Progress on stderr.
    pub progress: bool,
    /// A flow for the full distribution to use as the reference instead of training one (e.g.
    /// a sweep's model whose range holds T).
    pub reference: Option<Flow>,
}

/// Estimate P(A) at temperature `t` with `samples` samples per flow and `train_steps` steps
/// of training per flow.
pub fn estimate(
    energy: Arc<dyn Energy>,
    event: Event,
    t: f64,
    samples: usize,
    train_steps: usize,
    seed: u64,
    progress: bool,
) -> Result<RareResult> {
    let cfg = RareConfig {
        samples,
        train_steps,
        train_seconds: None,
        seed,
        progress,
        reference: None,
    };
    estimate_with(energy, event, t, &cfg).map(|(r, _)| r)
}

/// [`estimate`] with a [`RareConfig`]; returns the reference flow too (trained or given), which
/// is an ordinary model of the system (saveable, loadable by every command).
pub fn estimate_with(
    energy: Arc<dyn Energy>,
    event: Event,
    t: f64,
    cfg: &RareConfig,
) -> Result<(RareResult, Flow)> {
    crate::systems::flows_apply(energy.as_ref())?;
    let (samples, seed, progress) = (cfg.samples, cfg.seed, cfg.progress);
    check_temperature(t)?;
    event.check(energy.dim())?;
    if samples < 2 {
        return input_err("need at least 2 samples");
    }
    if cfg.train_steps == 0 {
        return input_err("--train-steps must be at least 1");
    }
    if let Some(s) = cfg.train_seconds {
        if !(s.is_finite() && s > 0.0) {
            return input_err("--train-seconds must be positive");
        }
    }
    crate::memory::check(
        "the samples",
        crate::memory::sample_rows(2 * samples, energy.dim()),
    )?;
    let restricted: Arc<dyn Energy> = Arc::new(Restricted {
        inner: energy.clone(),
        event,
        kappa: 50.0 / t,
    });
    let t0 = std::time::Instant::now();
    let mut flows: Vec<Flow> = Vec::new();
    for (k, target) in [restricted, energy.clone()].iter().enumerate() {
        if let (1, Some(reference)) = (k, &cfg.reference) {
            flows.push(reference.clone());
            continue;
        }
        let mut tc = TrainConfig::around(t);
        tc.set_budget(cfg.train_steps, cfg.train_seconds);
        tc.seed = crate::rng::derive(seed, "rare/training", k as u64);
        let mut bar = Progress::new(2.0);
        let mut obs: Vec<&mut dyn Observer> = Vec::new();
        if progress {
            eprintln!(
                "[rare] training the {} flow",
                if k == 0 { "event" } else { "reference" }
            );
            obs.push(&mut bar);
        }
        let (flow, _) = train_new(target.as_ref(), &default_flow(), &tc, &mut obs)?;
        flows.push(flow);
    }
    let train_seconds = t0.elapsed().as_secs_f64();
    let mut rng = crate::rng::stream(seed, "rare/estimate", 0);
    let mut logs = Vec::new();
    let mut inside = 0usize;
    for (k, flow) in flows.iter().enumerate() {
        let s = flow.sample_and_log_prob(samples, &[t], &mut rng)?;
        let lw: Vec<f64> =
            s.x.rows()
                .into_iter()
                .zip(&s.log_q)
                .map(|(r, &lq)| {
                    let x = r.as_slice().unwrap();
                    let u = energy.energy(x);
                    let keep = k == 1 || event.contains(x, u);
                    if k == 0 && keep {
                        inside += 1;
                    }
                    if keep && u.is_finite() && lq.is_finite() {
                        -u / t - lq
                    } else {
                        f64::NEG_INFINITY
                    }
                })
                .collect();
        logs.push(log_mean_and_rel_var(&lw));
    }
    let ((lza, ra), (lz, r0)) = (logs[0], logs[1]);
    let p = (lza - lz).exp();
    let p_se = p * (ra + r0).sqrt();
    let evals = 2 * samples;
    let p_exact = if energy.dim() <= 2 {
        crate::exact::quadrature_expectation(energy.as_ref(), t, &|x| {
            if event.contains(x, energy.energy(x)) {
                1.0
            } else {
                0.0
            }
        })
        .ok()
        .map(|(v, _)| v)
    } else {
        None
    };
    let p_ref = p_exact.unwrap_or(p);
    let result = RareResult {
        event: format!("{event:?}"),
        temperature: t,
        p,
        p_se,
        p_exact,
        variance_reduction: p_ref * (1.0 - p_ref) / (p_se * p_se * evals as f64),
        energy_evaluations: evals,
        fraction_in_event: inside as f64 / samples as f64,
        train_seconds,
    };
    let reference = flows
        .pop()
        .ok_or_else(|| crate::Error::Engine("no reference flow".into()))?;
    Ok((result, reference))
}
