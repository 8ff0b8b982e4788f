//! One sampler at one temperature on a named system (the `mcmc` command's work): HMC,
//! random-walk Metropolis, or flow-MCMC with a flow trained for the neighbourhood of T (or
//! loaded), and the estimates with batch-means errors.
//!
//! On φ⁴ the observables are |M|/V, M²/V and S (see [`crate::lattice`]) and the flow is the
//! lattice flow; on gauge links the plaquette, Q, E and Q² with the gauge flow; on planar spins
//! |M|/V and U with the spin flow; elsewhere x₀ and U with the default coupling flow.

use std::path::PathBuf;
use std::str::FromStr;

use serde_json::{json, Value};

use super::stats::MIN_CHAIN_TAUS;
use super::RwmConfig;
use super::{batch_means, flow_mcmc, hmc, rwm, tau_int, ChainRun, FlowMcmcConfig, HmcConfig};
use crate::error::{input_err, Error, Result};
use crate::flows::{default_flow, io, Flow};
use crate::lattice::{phi4_observables, summarize_phi4, train_phi4_flow, Phi4FlowConfig};
use crate::observables::{Derived, Observable};
use crate::observe::{Observer, Progress};
use crate::systems::{self, check_temperature, Energy, Params, Phi4};
use crate::train::{train_new, TrainConfig};

/// The flow's and HMC's chains run on up to this many times their `steps` by default.
pub const RUN_ON: usize = 8;

/// Which sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// Independence Metropolis with a trained flow as proposal.
    Flow,
    /// Hamiltonian Monte Carlo.
    Hmc,
    /// Random-walk Metropolis.
    Rwm,
}

impl FromStr for Sampler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Sampler> {
        match s {
            "flow" => Ok(Sampler::Flow),
            "hmc" => Ok(Sampler::Hmc),
            "rwm" => Ok(Sampler::Rwm),
            other => input_err(format!("unknown sampler {other:?} (flow, hmc or rwm)")),
        }
    }
}

impl Sampler {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Sampler::Flow => "flow",
            Sampler::Hmc => "hmc",
            Sampler::Rwm => "rwm",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct McmcConfig {
    /// Registry name of the system.
    pub system: String,
    /// Its `key=value` parameters.
    pub params: Vec<String>,
    /// The sampler.
    pub sampler: Sampler,
    /// Temperature.
    pub t: f64,
    /// Steps per chain after burn-in (burn-in is a tenth more).
    pub steps: usize,
    /// Flow and HMC samplers: the same chains run on, their length doubling, up to this many
    /// steps until they are [`MIN_CHAIN_TAUS`] τ_int long (`None`: [`RUN_ON`] × `steps`;
    /// `Some(steps)`: exactly `steps`). Random-walk Metropolis runs exactly `steps`.
    pub max_steps: Option<usize>,
    /// Parallel chains.
    pub chains: usize,
    /// Flow sampler: every this many steps a local HMC trajectory instead of a flow proposal
    /// (0: the flow alone; `None`: [`default_local_every`]).
    pub local_every: Option<usize>,
    /// Training budget of the flow sampler, in steps.
    pub train_steps: usize,
    /// A wall-time limit on that training instead (the result then depends on the machine).
    pub train_seconds: Option<f64>,
    /// Seed.
    pub seed: u64,
    /// Progress on stderr.
    pub progress: bool,
    /// Use this saved model instead of training (flow sampler).
    pub load_model: Option<PathBuf>,
    /// Save the trained flow here (flow sampler).
    pub save_model: Option<PathBuf>,
    /// Observables averaged along the chains beside the system's own figures (JSON
    /// `observables`; see [`crate::observables`]).
    pub observables: Vec<Observable>,
    /// Quantities derived from the observables' averages ([`Derived`]), after them in the JSON.
    pub derived: Vec<Derived>,
}

impl McmcConfig {
    /// Defaults for a sampler on a system at T = 1: 2000 steps × 64 chains for the flow, 5000 × 8
    /// otherwise, the flow's and HMC's chains running on up to [`RUN_ON`] times that while
    /// shorter than [`MIN_CHAIN_TAUS`] τ_int; 10 000 training steps on φ⁴ (the lattice flow),
    /// 5000 otherwise.
    pub fn new(system: &str, sampler: Sampler) -> McmcConfig {
        let flow = sampler == Sampler::Flow;
        let steps = if flow { 2000 } else { 5000 };
        McmcConfig {
            system: system.into(),
            params: Vec::new(),
            sampler,
            t: 1.0,
            steps,
            max_steps: None,
            chains: if flow { 64 } else { 8 },
            local_every: None,
            train_steps: if system == "phi4" { 10_000 } else { 5000 },
            train_seconds: None,
            seed: 0,
            progress: true,
            load_model: None,
            save_model: None,
            observables: Vec::new(),
            derived: Vec::new(),
        }
    }
}

/// Run it: the report (the `mcmc` JSON) and the flow, when the sampler used one.
pub fn run_mcmc(cfg: &McmcConfig) -> Result<(Value, Option<Flow>)> {
    check_temperature(cfg.t)?;
    if cfg.steps < 40 || cfg.chains == 0 {
        return input_err("--steps must be ≥ 40 and --chains ≥ 1");
    }
    let max_steps = match (cfg.max_steps, cfg.sampler) {
        (Some(_), Sampler::Rwm) => return input_err("--max-steps needs --sampler flow or hmc"),
        (Some(m), _) if m < cfg.steps => {
            return input_err(format!("--max-steps {m} is below --steps {}", cfg.steps))
        }
        (None, Sampler::Rwm) => None,
        (m, _) => Some(m.unwrap_or(RUN_ON * cfg.steps)),
    };
    if cfg.train_steps == 0 {
        return input_err("--train-steps must be at least 1");
    }
    if let Some(s) = cfg.train_seconds {
        if !(s.is_finite() && s > 0.0) {
            return input_err("--train-seconds must be positive");
        }
    }
    let energy = systems::build(&cfg.system, &cfg.params)?;
    let d = energy.dim();
    let user = crate::observables::resolve(&cfg.observables, energy.as_ref())?;
    for d in &cfg.derived {
        d.check(user.len())?;
    }
    crate::memory::check("the chains", crate::memory::sample_rows(cfg.chains * 4, d))?;
    let lattice = match cfg.system.as_str() {
        "phi4" => Some(Phi4::from_params(&Params::parse(&cfg.params)?)?),
        _ => None,
    };
    let gauge = match energy.structure() {
        systems::Structure::Gauge(u) => Some(u.clone()),
        _ => None,
    };
    let spins = match energy.structure() {
        systems::Structure::Spins(xy) => Some(xy.clone()),
        _ => None,
    };
    let (e, lat, gauge_obs, extra) = (energy.clone(), lattice.clone(), gauge.clone(), user.clone());
    let (spins_obs, t) = (spins.clone(), cfg.t);
    // The system's own series first, then the user's observables.
    let observe = move |x: &[f64]| -> Vec<f64> {
        let mut v = match (&lat, &gauge_obs) {
            (Some(l), _) => phi4_observables(l, x),
            // Gauge links: the plaquette, Q (rounded: an integer up to 1e-15 on the torus, so a
            // chain that never changes sector records a constant), E and Q² (its own series:
            // flow proposals flip the sign of Q freely, so τ_int(Q²) can exceed τ_int(Q), and
            // the batches must be long against both).
            (_, Some(u)) => {
                let q = u.charge(x).round();
                vec![u.mean_plaquette(x), q, e.energy(x), q * q]
            }
            // Planar spins: |M|/V (x₀, an angle, diffuses with the global rotation).
            _ => match &spins_obs {
                Some(xy) => {
                    let (c, s) = xy.magnetisation(x);
                    vec![c.hypot(s) / xy.volume() as f64, e.energy(x)]
                }
                None => vec![x[0], e.energy(x)],
            },
        };
        v.extend(extra.iter().map(|o| o.eval(x, t)));
        v
    };
    let x0 = crate::mcmc::chain_starts(
        energy.as_ref(),
        cfg.chains,
        &mut crate::rng::stream(cfg.seed, "mcmc/starts", 0),
    )?;
    let mut bar = Progress::new(2.0);
    let mut obs: Vec<&mut dyn Observer> = Vec::new();
    if cfg.progress {
        obs.push(&mut bar);
    }
    // The sampler draws on its own stream, apart from the flow's training (seeded by cfg.seed).
    let (burn_in, seed) = (
        cfg.steps / 10,
        crate::rng::derive(cfg.seed, "mcmc/sampler", 0),
    );
    let mut training = Value::Null;
    let mut flow_out = None;
    let run = match cfg.sampler {
        Sampler::Hmc => {
            let hc = HmcConfig {
                n_trajectories: cfg.steps,
                max_trajectories: max_steps,
                burn_in,
                n_chains: cfg.chains,
                seed,
                ..Default::default()
            };
            hmc(energy.as_ref(), cfg.t, &x0, &hc, &observe)?
        }
        Sampler::Rwm => {
            let rc = RwmConfig {
                n_steps: cfg.steps,
                burn_in,
                thin: 1,
                seed,
                ..Default::default()
            };
            let r = rwm(energy.as_ref(), cfg.t, x0.view(), &rc)?;
            // Samples are chain-major: each chain's kept states in a block.
            let n_obs = observe(&vec![0.0; d]).len();
            let per_chain = r.samples.nrows() / cfg.chains;
            let mut series = vec![vec![Vec::with_capacity(per_chain); cfg.chains]; n_obs];
            for (i, row) in r.samples.rows().into_iter().enumerate() {
                for (k, o) in observe(&row.to_vec()).into_iter().enumerate() {
                    series[k][i / per_chain].push(o);
                }
            }
            ChainRun {
                series,
                acceptance: r.acceptance,
                energy_evaluations: r.energy_evaluations,
                seconds: 0.0,
                proposal_pareto_k: None,
                local_acceptance: None,
            }
        }
        Sampler::Flow => {
            let flow = match &cfg.load_model {
                Some(path) => io::load_for(path, &cfg.system, energy.as_ref())?,
                None => {
                    let (flow, report) = train_flow(
                        cfg,
                        energy.as_ref(),
                        lattice.as_ref(),
                        gauge.as_ref(),
                        spins.as_ref(),
                        &mut obs,
                    )?;
                    training = serde_json::to_value(&report).unwrap_or_default();
                    if let Some(path) = &cfg.save_model {
                        let meta = io::system_meta(&cfg.system, energy.as_ref(), &flow);
                        io::save(&flow, meta, path)?;
                    }
                    flow
                }
            };
            let fc = FlowMcmcConfig {
                n_steps: cfg.steps,
                max_steps,
                burn_in,
                n_chains: cfg.chains,
                local_every: cfg.local_every.unwrap_or(default_local_every(
                    lattice.is_some(),
                    gauge.is_some() || spins.is_some(),
                )),
                local_step: 0.1,
                seed,
            };
            let run = flow_mcmc(
                &flow,
                &[cfg.t],
                energy.as_ref(),
                cfg.t,
                &fc,
                &observe,
                &mut obs,
            )?;
            flow_out = Some(flow);
            run
        }
    };
    let mut warnings: Vec<String> = Vec::new();
    let mut v = json!({
        "system": cfg.system,
        "sampler": cfg.sampler.name(),
        "temperature": cfg.t,
        "acceptance": run.acceptance,
        "energy_evaluations": run.energy_evaluations,
        "seconds": run.seconds,
        "steps": run.series.first().and_then(|s| s.first()).map_or(0, Vec::len),
    });
    if let Some(u) = &gauge {
        // Batches at least 10 τ_int long (of the slowest of plaquette, Q, E and Q²), at most 20
        // per chain: a flow proposal accepted 1 % of the time makes τ_int(Q) ≈ 250 steps, and
        // 100-step batches then understated the errors (⟨Q²⟩ 8 "standard errors" off at β = 5).
        let len = run.series[0].first().map_or(0, Vec::len);
        let own = &run.series[..run.series.len() - user.len()];
        let slowest = own.iter().map(|s| tau_int(s)).fold(0.5, f64::max);
        let per_chain = batches_per_chain(len, slowest);
        let mean = |series: &[Vec<f64>]| {
            batch_means(series, per_chain, |c| {
                c.iter().sum::<f64>() / c.len() as f64
            })
        };
        v["batches_per_chain"] = json!(per_chain);
        // Chains only a few τ_int long have not forgotten their start (flow draws, or the cold
        // configuration) and average over too few independent stretches for the errors to
        // hold: said, never hidden (flow-MCMC at β = 5, L = 8, 2000 steps of τ_int(Q) ≈ 290:
        // ⟨Q²⟩ 3.8 "standard errors" off).
        v["chain_length_in_tau"] = json!(chain_length(
            len,
            slowest,
            "plaquette, Q, E and Q²",
            &mut warnings
        ));
        let plaquette = mean(&run.series[0]);
        let q2 = mean(&run.series[3]);
        let th = crate::estimators::thermo_chains(&run.series[2], cfg.t)?;
        v["plaquette"] = json!(plaquette.value);
        v["plaquette_se"] = json!(plaquette.se);
        v["q2"] = json!(q2.value);
        // Where no chain ever changed Q, neither τ_int(Q) nor the error of ⟨Q²⟩ was measured
        // (a constant series would say τ_int = 0.5 and SE = 0): both null, `q_frozen` true.
        let frozen = run.series[1]
            .iter()
            .all(|c| c.windows(2).all(|w| w[0] == w[1]));
        let unless_frozen = |x: f64| if frozen { Value::Null } else { json!(x) };
        v["q_frozen"] = json!(frozen);
        v["q2_se"] = unless_frozen(q2.se);
        v["tau_int_q"] = unless_frozen(tau_int(&run.series[1]));
        v["tau_int_q2"] = unless_frozen(tau_int(&run.series[3]));
        v["U"] = json!(th.u.value);
        v["U_se"] = json!(th.u.se);
        v["Cv"] = json!(th.cv.value);
        v["Cv_se"] = json!(th.cv.se);
        v["exact"] =
            serde_json::to_value(crate::exact::u1_exact(u.l, 1.0 / cfg.t)?).unwrap_or_default();
    } else if lattice.is_some() {
        let s = serde_json::to_value(summarize_phi4(&run)?).unwrap_or_default();
        if let (Some(obj), Some(fields)) = (v.as_object_mut(), s.as_object()) {
            obj.extend(fields.clone());
        }
    } else {
        let mean = |k: usize| {
            batch_means(&run.series[k], 20, |c| {
                c.iter().sum::<f64>() / c.len() as f64
            })
        };
        // The first series: x₀, or for planar spins |M|/V.
        let first = if spins.is_some() { "abs_m" } else { "x0" };
        let (x0m, u) = (mean(0), mean(1));
        // C_V = Var(U)/T², batch means over 20 batches per chain.
        let cv = batch_means(&run.series[1], 20, |c| {
            let m = c.iter().sum::<f64>() / c.len() as f64;
            c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (c.len() as f64 * cfg.t * cfg.t)
        });
        v[first] = json!(x0m.value);
        v[format!("{first}_se")] = json!(x0m.se);
        v["U"] = json!(u.value);
        v["U_se"] = json!(u.se);
        v["Cv"] = json!(cv.value);
        v["Cv_se"] = json!(cv.se);
        let tau_x0 = tau_int(&run.series[0]);
        v[format!("tau_int_{first}")] = json!(tau_x0);
        let len = run.series[0].first().map_or(0, Vec::len);
        let slowest = tau_x0.max(tau_int(&run.series[1]));
        let what = format!("{first} and U");
        v["chain_length_in_tau"] = json!(chain_length(len, slowest, &what, &mut warnings));
        // The exact values wherever the system has them (closed form, quadrature in 1-D and 2-D,
        // the 2 × 2 XY torus), in `u1`'s lower-case fields.
        if let Some(r) = crate::exact::reference(energy.as_ref(), &[cfg.t])? {
            v["exact"] = serde_json::to_value(r[0]).unwrap_or_default();
        }
    }
    if !user.is_empty() || !cfg.derived.is_empty() {
        let first = run.series.len() - user.len();
        let series = &run.series[first..];
        v["observables"] = user_observables(
            &user,
            &cfg.derived,
            series,
            energy.as_ref(),
            cfg.t,
            &mut warnings,
        )?;
    }
    if let Some(a) = run.local_acceptance {
        v["local_acceptance"] = json!(a);
    }
    if let Some(k) = run.proposal_pareto_k {
        v["proposal_pareto_k"] = json!(k);
        if k.is_nan() || k >= 0.5 {
            warnings.push(format!(
                "the flow proposals' weights have k̂ = {k:.2} (≥ ½: infinite variance): the chains seldom reach where the flow is too thin, and the estimates may miss it"
            ));
        }
    }
    if !warnings.is_empty() {
        if cfg.progress {
            for w in &warnings {
                eprintln!("[mcmc] warning: {w}");
            }
        }
        v["warning"] = json!(warnings.join("; "));
    }
    if !training.is_null() {
        v["training"] = training;
    }
    Ok((v, flow_out))
}

/// Batches per chain for batch-means errors of chains `len` steps long whose slowest τ_int is
/// `tau`: batches at least 10 τ_int long, at most 20 per chain.
fn batches_per_chain(len: usize, tau: f64) -> usize {
    ((len as f64 / (10.0 * tau)) as usize).clamp(1, 20)
}

/// The user's observables from their series (`series[k][chain][step]`): the mean with
/// batch-means errors ([`batches_per_chain`] of its own τ_int), τ_int, and the exact value where
/// known ([`crate::observables::exact_curves`]); a warning for each whose chains are short
/// against its τ_int. Then the quantities `derived` from them, by the jackknife over batches
/// as long as the slowest of the observables each uses.
fn user_observables(
    obs: &[Observable],
    derived: &[Derived],
    series: &[Vec<Vec<f64>>],
    energy: &dyn systems::Energy,
    t: f64,
    warnings: &mut Vec<String>,
) -> Result<Value> {
    let exact = crate::observables::exact_curves(obs, energy, &[t])?;
    let len = series.first().and_then(|s| s.first()).map_or(0, Vec::len);
    let taus: Vec<f64> = series.iter().map(|s| tau_int(s)).collect();
    let mut out: Vec<Value> = (obs.iter().zip(series).zip(&taus).enumerate())
        .map(|(k, ((o, s), &tau))| {
            chain_length(len, tau, o.name(), warnings);
            let per_chain = batches_per_chain(len, tau);
            let m = batch_means(s, per_chain, |c| c.iter().sum::<f64>() / c.len() as f64);
            json!({
                "name": o.name(),
                "value": m.value,
                "se": m.se,
                "tau_int": tau,
                "exact": exact[k].as_ref().map(|e| e[0]),
                "derived": false,
            })
        })
        .collect();
    let at: Vec<Option<f64>> = exact.iter().map(|e| e.as_ref().map(|e| e[0])).collect();
    for d in derived {
        let slowest = (d.uses().iter()).fold(f64::NAN, |m, &k| m.max(taus[k]));
        let parts = batch_influences(series, batches_per_chain(len, slowest).max(2))?;
        let e = d.estimate(&parts, t)?;
        out.push(json!({
            "name": d.name(),
            "value": e.value,
            "se": e.se,
            "exact": d.exact(&at, t),
            "derived": true,
        }));
    }
    Ok(Value::Array(out))
}

/// Each series' mean with its influence values per batch, `per_chain` batches in each chain
/// (the last takes the steps left over): the batch-means error of [`batch_means`], in the form
/// a derived quantity's jackknife needs ([`crate::estimators::Influence`]).
fn batch_influences(
    series: &[Vec<Vec<f64>>],
    per_chain: usize,
) -> Result<Vec<crate::estimators::Influence>> {
    (series.iter())
        .map(|chains| {
            let mut groups = Vec::new();
            for (c, steps) in chains.iter().enumerate() {
                let len = (steps.len() / per_chain).max(1);
                groups
                    .extend((0..steps.len()).map(|i| c * per_chain + (i / len).min(per_chain - 1)));
            }
            let values: Vec<f64> = chains.iter().flatten().copied().collect();
            let n_groups = chains.len() * per_chain;
            crate::estimators::influence_replicas(
                &values,
                &vec![0.0; values.len()],
                &groups,
                n_groups,
            )
        })
        .collect()
}

/// The flow sampler's local moves by default: none on φ⁴ (the flow alone: its τ_int is the
/// figure of merit, and its proposals are accepted often), every second step on angles (gauge
/// links, where the flow's weights are heavy-tailed at large β and it alone sticks; planar
/// spins), every fifth step elsewhere.
pub fn default_local_every(lattice: bool, angles: bool) -> usize {
    match (lattice, angles) {
        (true, _) => 0,
        (_, true) => 2,
        _ => 5,
    }
}

/// Chains `len` steps long over the slowest observable's τ_int (of `what`), with a warning in
/// `warnings` below [`MIN_CHAIN_TAUS`].
fn chain_length(len: usize, slowest: f64, what: &str, warnings: &mut Vec<String>) -> f64 {
    let taus = len as f64 / slowest;
    if taus.is_nan() || taus < MIN_CHAIN_TAUS {
        warnings.push(format!(
            "the chains are {taus:.1} τ_int long (τ_int = {slowest:.0} steps, the slowest of {what}); below {MIN_CHAIN_TAUS} their start is not forgotten and the errors do not hold: run longer (--steps, --max-steps)"
        ));
    }
    taus
}

/// The flow sampler's proposal: the lattice flow on φ⁴, the gauge flow on `u1`, the spin flow
/// on `xy`, the default coupling flow elsewhere, trained over [T/1.25, 1.25 T] (the gauge flow
/// up to T = 1 as well: [`crate::gauge::AngleFlowConfig::new`]).
fn train_flow(
    cfg: &McmcConfig,
    energy: &dyn Energy,
    lattice: Option<&Phi4>,
    gauge: Option<&crate::systems::u1::U1>,
    spins: Option<&crate::systems::Xy>,
    obs: &mut [&mut dyn Observer],
) -> Result<(Flow, crate::train::TrainReport)> {
    let angles = |mut fc: crate::gauge::AngleFlowConfig| {
        fc.train.set_budget(cfg.train_steps, cfg.train_seconds);
        fc.train.seed = cfg.seed;
        fc
    };
    if let Some(u) = gauge {
        let fc = angles(crate::gauge::AngleFlowConfig::new(cfg.t));
        return crate::gauge::train_u1_flow(u, &fc, obs);
    }
    if let Some(xy) = spins {
        let fc = angles(crate::gauge::AngleFlowConfig::xy(cfg.t));
        return crate::gauge::train_xy_flow(xy, &fc, obs);
    }
    match lattice {
        Some(l) => {
            let mut fc = Phi4FlowConfig::new(cfg.t);
            fc.train.set_budget(cfg.train_steps, cfg.train_seconds);
            fc.train.seed = cfg.seed;
            train_phi4_flow(l, &fc, obs)
        }
        None => {
            let mut tc = TrainConfig::around(cfg.t);
            tc.set_budget(cfg.train_steps, cfg.train_seconds);
            tc.seed = cfg.seed;
            train_new(energy, &default_flow(), &tc, obs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// With batches of equal length, a series' influence values per batch give exactly the
    /// batch-means estimate and error that `mcmc` reports for the observable itself.
    #[test]
    fn batch_influences_give_the_batch_means_error() {
        let mut rng = crate::rng::seeded(2);
        let chains: Vec<Vec<f64>> = (0..3)
            .map(|_| (0..100).map(|_| rng.random_range(-1.0..2.0)).collect())
            .collect();
        let got = batch_influences(std::slice::from_ref(&chains), 4).unwrap()[0].estimate();
        let want = batch_means(&chains, 4, |c| c.iter().sum::<f64>() / c.len() as f64);
        assert!(
            (got.value - want.value).abs() < 1e-12,
            "{got:?} vs {want:?}"
        );
        assert!(
            (got.se / want.se - 1.0).abs() < 1e-10,
            "{got:?} vs {want:?}"
        );
    }
}
