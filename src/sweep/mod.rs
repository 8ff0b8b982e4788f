//! The temperature sweep: train (or load) one temperature-conditioned flow over
//! [T_min, T_max], then at each of N evenly spaced temperatures draw samples in rounds until
//! C_V reaches the requested relative standard error (or the budget ends), reweight, and
//! report ⟨U⟩, C_V (fluctuation and d⟨U⟩/dT), log Z, F, S with standard errors, the trust
//! checks and a verdict, beside exact references where they exist.
//!
//! **Proposal.** Samples come from the defensive mixture 0.9 q(·|T) + 0.1 q_{1.2}(·|T) (the
//! flow with its base widened 1.2×; exact density at no extra cost), so that tails where the
//! flow is lighter than the Boltzmann distribution do not give unbounded weights.
//!
//! **Rounds** (importance sampling). Every temperature starts with `samples` draws. After each
//! round a temperature whose relative C_V error r exceeds `cv_tol` draws about
//! N (r/cv_tol)² · 1.2 − N more (at most 3 N, at least N/4), within `max_samples` per
//! temperature and the optional `estimate_seconds`.
//!
//! **Trust** ([`checks`]): a temperature is trusted when its local checks (ESS, PSIS k̂,
//! finite energies), the thermodynamic-consistency checks across the grid, and the
//! comparison with a witness of another algorithm all pass: parallel tempering without the
//! flow ([`witness`]), or for points estimated by tempering, the anneal
//! ([`checks::annealing_witness`]).
//!
//! **Methods** ([`methods`], `--methods`, default `is,flow-mcmc,temper,anneal`): one escalation
//! loop; every temperature starts with the first method and each further one takes the
//! temperatures whose checks still fail. Importance sampling (`is`, [`methods::importance`]) is
//! followed by up to `repairs` rounds of retraining (`retrain`: half the training budget, lower
//! learning rate, reverse KL on the failing range and forward KL (weight 2) on the witness's
//! configurations plus, at each failing temperature, flow samples resampled by importance
//! weight, then a fresh witness and new estimates), skipped when only the weights' tail fails
//! and flow-MCMC follows. Flow-MCMC ([`flow_mcmc`]: the flow's
//! independence kernel, exact whatever the weights' tail) takes temperatures where only the
//! weights' tail (k̂) fails; tempering ([`temper`]) and annealing ([`methods::anneal`]) take
//! whatever still fails. Every stage ends the same way (`settle`): checks recomputed, a line
//! in `repairs`, and the state from before restored when fewer temperatures are trusted.
//!
//! Files: `methods/` (one file per method), `model` (training and loading), [`checks`],
//! [`witness`], `retrain`, `report` (the result and its table).

pub mod checks;
mod csv_out;
pub mod methods;
mod model;
mod report;
mod retrain;
mod samples_out;
pub mod witness;

pub use methods::importance::estimate;
pub use methods::{flow_mcmc, temper, Method, Tempering};
pub use model::sweep_training;
pub use report::{
    ExactCurves, ObservableCurve, PeakReport, SweepResult, TrainSummary, WitnessSummary,
};
pub use samples_out::write_samples;

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{input_err, Result};
use crate::estimators::{cv_from_derivative, Estimate, Thermo};
use crate::exact::{reference, Reference};
use crate::flows::{io, CouplingConfig, Flow};
use crate::observables::{Derived, Observable};
use crate::systems::{self, check_temperature, Energy};
use crate::train::History;
use checks::{Checks, WitnessPoint};
use methods::importance::{self, Estimator, Rounds};
use witness::{run_witness, Witness, WitnessConfig};

/// Settings of a sweep (the CLI's flags).
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// System name.
    pub system: String,
    /// `key=value` parameters.
    pub params: Vec<String>,
    /// Lowest temperature.
    pub t_min: f64,
    /// Highest temperature.
    pub t_max: f64,
    /// Number of evenly spaced temperatures.
    pub temps: usize,
    /// Training budget in seconds (training stops at the first budget reached). With neither
    /// budget given, the system's default step budget ([`default_train_steps`]).
    pub train_seconds: Option<f64>,
    /// Training budget in steps (the same result on any machine for a given seed).
    pub train_steps: Option<usize>,
    /// Samples per temperature in the first round.
    pub samples: usize,
    /// Target relative standard error of C_V at every temperature (None: one round).
    pub cv_tol: Option<f64>,
    /// Most samples drawn per temperature.
    pub max_samples: usize,
    /// Optional wall-clock budget for estimation (all rounds).
    pub estimate_seconds: Option<f64>,
    /// Witness sweeps after burn-in (0: no witness; its checks then fail).
    pub witness_sweeps: usize,
    /// Rounds of retraining where importance sampling fails (with [`Method::Importance`]).
    pub repairs: usize,
    /// The estimation methods in the order the sweep escalates through them ([`methods`]).
    pub methods: Vec<Method>,
    /// Seed.
    pub seed: u64,
    /// Flow architecture.
    pub flow: CouplingConfig,
    /// Load a trained model instead of training.
    pub load_model: Option<PathBuf>,
    /// With `load_model`: continue training it with this config's budget before estimating.
    pub continue_training: bool,
    /// Save the trained model.
    pub save_model: Option<PathBuf>,
    /// Print progress to stderr.
    pub progress: bool,
    /// Functions of the configuration whose averages ⟨O⟩(T) are estimated beside ⟨U⟩
    /// ([`crate::observables`]).
    pub observables: Vec<Observable>,
    /// Quantities derived from the observables' averages, f(⟨O_1⟩, …, T), reported after them
    /// by the jackknife over the estimates' groups ([`Derived`]).
    pub derived: Vec<Derived>,
    /// Locate the heat capacity's peak ([`PeakReport`]).
    pub peak: bool,
}

impl Default for SweepConfig {
    /// The default run: double-well-2d over [0.5, 3] at 32 temperatures, 10 s of training, C_V
    /// to 1 %: about 25 s on two cores.
    fn default() -> Self {
        SweepConfig {
            system: "double-well-2d".into(),
            params: Vec::new(),
            t_min: 0.5,
            t_max: 3.0,
            temps: 32,
            train_seconds: None,
            train_steps: None,
            samples: 20_000,
            cv_tol: Some(DEFAULT_CV_TOL),
            max_samples: 1_000_000,
            estimate_seconds: None,
            witness_sweeps: 20_000,
            repairs: 1,
            methods: Method::all(),
            seed: 0,
            flow: crate::flows::default_flow(),
            load_model: None,
            continue_training: false,
            save_model: None,
            progress: true,
            observables: Vec::new(),
            peak: false,
            derived: Vec::new(),
        }
    }
}

/// The estimation proposal is the flow's defensive mixture, the same as its independence
/// kernel's ([`crate::mcmc::independence`]): it keeps the weights bounded where the flow's tails
/// are lighter than the target's, for a few per mille of ESS.
pub use crate::mcmc::independence::{DEFENSIVE_FRACTION, DEFENSIVE_WIDTH};

pub use methods::anneal::{SMC_MAX_RUN, SMC_PARTICLES, SMC_REPLICAS};
pub use methods::flow_mcmc::MCMC_CHAINS;
pub use methods::ESTIMATE_GROWTH;

/// The default target relative standard error of C_V.
pub const DEFAULT_CV_TOL: f64 = 0.01;

/// Evenly spaced temperatures.
pub fn temperature_grid(t_min: f64, t_max: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| t_min + (t_max - t_min) * i as f64 / (n - 1) as f64)
        .collect()
}

fn params_map(e: &dyn Energy) -> serde_json::Map<String, serde_json::Value> {
    e.params()
        .into_iter()
        .map(|(k, v)| (k, serde_json::json!(v)))
        .collect()
}

fn validate(cfg: &SweepConfig) -> Result<()> {
    check_temperature(cfg.t_min)?;
    check_temperature(cfg.t_max)?;
    if cfg.t_min >= cfg.t_max {
        return input_err(format!(
            "--tmin {} must be below --tmax {}",
            cfg.t_min, cfg.t_max
        ));
    }
    if cfg.temps < 2 {
        return input_err(format!("--temps must be at least 2, got {}", cfg.temps));
    }
    methods::check_list(&cfg.methods)?;
    if cfg.samples < 100 {
        return input_err("--samples must be at least 100");
    }
    if cfg.max_samples < cfg.samples {
        return input_err(format!(
            "--max-samples {} is below --samples {}",
            cfg.max_samples, cfg.samples
        ));
    }
    if let Some(t) = cfg.cv_tol {
        if !(t.is_finite() && t > 0.0) {
            return input_err(format!("--cv-tol must be positive, got {t}"));
        }
    }
    if let Some(s) = cfg.estimate_seconds {
        if !(s.is_finite() && s > 0.0) {
            return input_err(format!("--estimate-seconds must be positive, got {s}"));
        }
    }
    if cfg.load_model.is_none() || cfg.continue_training {
        if let Some(s) = cfg.train_seconds {
            if !(s.is_finite() && s > 0.0) {
                return input_err("--train-seconds must be positive");
            }
        }
        if cfg.train_steps == Some(0) {
            return input_err("--train-steps must be positive");
        }
    }
    Ok(())
}

/// Whether the checks of a point estimated by `m` score the flow at the witness's
/// configurations (the missed mass: the flow's own estimates only; tempering's and the
/// anneal's points drop those checks, and an unestimated point fails, the unknown mass with it).
fn scores_flow(m: &Estimator) -> bool {
    matches!(m, Estimator::Importance | Estimator::FlowMcmc(_))
}

/// Every check at every temperature: tempered points against the anneal `smc` (when run),
/// every other point against the parallel-tempering witness `w` (see [`checks`]), the
/// `observables` too where there are any.
fn all_checks(
    rounds: &Rounds,
    w: Option<&Witness>,
    smc: Option<&crate::mcmc::SmcRun>,
    flow: &Flow,
    energy: &dyn Energy,
    observables: &[Observable],
) -> Result<(Vec<Checks>, Vec<checks::WitnessPoint>)> {
    let th = &rounds.th;
    let grid = checks::grid(th);
    let mut all: Vec<Checks> = th
        .iter()
        .zip(grid)
        .zip(&rounds.method)
        .map(|((t, g), m)| {
            let mut c = match m {
                Estimator::Smc(p) => checks::local_smc(t, p),
                Estimator::FlowMcmc(ch) => checks::local_chains(t, ch),
                Estimator::Tempering(p) => checks::local_tempering(t, p),
                Estimator::Importance => checks::local(t),
                Estimator::Unestimated => checks::unestimated(),
            };
            c.extend(g);
            c
        })
        .collect();
    // The anneal where it starts, at T_max after burn-in, against the witness there.
    let start_z = match (w, smc) {
        (Some(w), Some(r)) => match (w.rung_of(th.len() - 1), r.start()) {
            (Some(k), Ok(a)) => {
                let m = &w.thermo[k];
                let z = |a: Estimate, m: Estimate| checks::z(a.value, a.se, m.value, m.se);
                z(a.u, m.u).max(z(a.cv, m.cv))
            }
            _ => f64::INFINITY,
        },
        _ => f64::INFINITY,
    };
    let (witness_checks, points) = match w {
        Some(w) => {
            let missed = (0..w.rungs.len())
                .map(|k| match w.grid_index[k] {
                    // Scoring the flow is the checks' cost (a minute at the L = 8 gauge field).
                    Some(i) if scores_flow(&rounds.method[i]) => {
                        // The largest weight the flow's samples there reached: importance
                        // sampling's, and flow-MCMC's proposals where it ran.
                        let mut max_log_w = rounds.draws[i].max_log_w(th[i].t);
                        if let Estimator::FlowMcmc(c) = &rounds.method[i] {
                            max_log_w = max_log_w.max(c.max_log_weight);
                        }
                        w.missed(k, flow, energy, max_log_w, &th[i])
                    }
                    _ => Ok(witness::Missed::UNKNOWN),
                })
                .collect::<Result<Vec<_>>>()?;
            checks::witness(th, w, &missed)
        }
        None => {
            let none = checks::Check {
                pass: false,
                value: 0.0,
                limit: 1.0,
            };
            let c = Checks::from([("witness".to_string(), none)]);
            (vec![c; th.len()], Vec::new())
        }
    };
    for (i, (c, x)) in all.iter_mut().zip(witness_checks).enumerate() {
        match &rounds.method[i] {
            // Tempering's witness is another algorithm, not the tempering witness.
            Estimator::Tempering(_) => {
                c.extend(checks::annealing_witness(
                    &th[i],
                    smc.map(|r| &r.points[i]),
                    start_z,
                ));
            }
            // The flow's weights are not the estimator there.
            Estimator::Smc(_) => c.extend(
                x.into_iter()
                    .filter(|(n, _)| n != "missed_mass" && n != "missed_bias"),
            ),
            _ => c.extend(x),
        }
    }
    if !observables.is_empty() {
        let est = rounds.observables(observables.len())?;
        for (i, c) in all.iter_mut().enumerate() {
            let witness = match (&rounds.method[i], w.and_then(|w| Some((w, w.rung_of(i)?)))) {
                (Estimator::Tempering(_), _) => smc.map(|r| {
                    r.points[i]
                        .observables
                        .iter()
                        .map(|o| o.estimate())
                        .collect()
                }),
                (_, Some((w, k))) => Some(
                    (observables.iter())
                        .map(|o| w.observable(k, o))
                        .collect::<Result<Vec<_>>>()?,
                ),
                (_, None) => None,
            };
            let est: Vec<Estimate> = est[i].iter().map(|o| o.estimate()).collect();
            c.extend(checks::observables_witness(&est, witness.as_deref()));
        }
    }
    all.iter_mut().for_each(checks::joint);
    Ok((all, points))
}

/// What every stage of a sweep reads: the settings, the system, the grid, the estimation seed.
struct Sweeper<'a> {
    cfg: &'a SweepConfig,
    energy: &'a dyn Energy,
    temps: Vec<f64>,
    seed: u64,
}

/// What the stages change.
struct State {
    flow: Flow,
    witness: Option<Witness>,
    rounds: Rounds,
    checks: Vec<Checks>,
    points: Vec<WitnessPoint>,
    repairs: Vec<String>,
    /// The sequential Monte Carlo run over the grid: the witness of tempered points, and the
    /// estimate where the anneal replaced failing ones.
    smc: Option<crate::mcmc::SmcRun>,
    /// The tempering runs whose estimates replaced failing ones.
    tempering: Option<temper::TemperRun>,
    estimate_seconds: f64,
    train: TrainSummary,
    history: History,
}

/// What a stage may change, kept so that it can be undone.
struct Saved {
    flow: Flow,
    witness: Option<Witness>,
    rounds: Rounds,
    /// Temperatures trusted then.
    trusted: usize,
}

impl State {
    /// The temperatures whose checks fail.
    fn failing(&self) -> Vec<usize> {
        (0..self.checks.len())
            .filter(|&i| !checks::all_pass(&self.checks[i]))
            .collect()
    }

    /// The state to go back to (see [`settle`]).
    fn saved(&self) -> Saved {
        Saved {
            flow: self.flow.clone(),
            witness: self.witness.clone(),
            rounds: self.rounds.clone(),
            trusted: self.checks.iter().filter(|c| checks::all_pass(c)).count(),
        }
    }
}

/// How every stage ends, and the one way to undo one: the checks recomputed, a line in the
/// repairs saying `what` the stage did and how many temperatures are trusted before (in
/// `saved`) and after, and when fewer are, the flow, witness and estimates of `saved` restored
/// and checked again (against the anneal as it is now, which a stage may have extended).
/// Returns whether the stage's result was kept.
fn settle(sw: &Sweeper, st: &mut State, saved: Saved, what: &str) -> Result<bool> {
    let before = saved.trusted;
    sw.check(st)?;
    let after = st.checks.iter().filter(|c| checks::all_pass(c)).count();
    let worse = after < before;
    st.repairs.push(format!(
        "{what}: trusted {before} → {after} of {}{}",
        sw.temps.len(),
        if worse {
            "; worse, so the state from before is kept"
        } else {
            ""
        }
    ));
    if worse {
        (st.flow, st.witness, st.rounds) = (saved.flow, saved.witness, saved.rounds);
        sw.check(st)?;
    }
    Ok(!worse)
}

/// "T = 0.500, 0.750" for the temperatures at `idx`.
fn at(temps: &[f64], idx: &[usize]) -> String {
    let t: Vec<String> = idx.iter().map(|&i| format!("{:.3}", temps[i])).collect();
    format!("T = {}", t.join(", "))
}

impl Sweeper<'_> {
    /// A witness run (none when `witness_sweeps` is 0 or Ctrl-C stopped it); `repair` varies
    /// its seed.
    fn witness(&self, repair: u64) -> Result<Option<Witness>> {
        let cfg = self.cfg;
        if cfg.witness_sweeps == 0 {
            return Ok(None);
        }
        if cfg.progress {
            eprintln!(
                "[sweep] witness: parallel tempering, 16 ladders from dispersed starts, {} sweeps",
                cfg.witness_sweeps
            );
        }
        let wc = WitnessConfig {
            sweeps: cfg.witness_sweeps,
            ladders: 16,
            seed: crate::rng::derive(cfg.seed, "sweep/witness", repair),
        };
        // Ctrl-C: no witness, so no point is trusted on its evidence; the sweep then assembles
        // and saves what it has.
        let Some(w) = crate::error::unless_interrupted(run_witness(self.energy, &self.temps, &wc))?
        else {
            return Ok(None);
        };
        if cfg.progress {
            eprintln!(
                "[sweep] witness: {} rungs, {} round trips (needs {}) in {:.1} s",
                w.rungs.len(),
                w.round_trips,
                w.ladders,
                w.seconds
            );
        }
        Ok(Some(w))
    }

    /// Recompute every check from the state's estimates, witness and flow; with progress on,
    /// say what is scored (the flow's density at the witness's configurations: minutes for
    /// the L = 8 gauge field) and the verdict.
    fn check(&self, st: &mut State) -> Result<()> {
        let t0 = std::time::Instant::now();
        // Before any estimate every point fails for want of one: nothing to say.
        let progress = self.cfg.progress
            && (st.rounds.method.iter()).any(|m| !matches!(m, Estimator::Unestimated));
        if let (true, Some(w)) = (progress, &st.witness) {
            let n: usize = (w.grid_index.iter().zip(&w.samples))
                .filter(|(g, _)| g.is_some_and(|i| scores_flow(&st.rounds.method[i])))
                .map(|(_, x)| x.nrows())
                .sum();
            if n > 0 {
                eprintln!("[sweep] checks: the flow's density at the witness's {n} configurations");
            }
        }
        (st.checks, st.points) = all_checks(
            &st.rounds,
            st.witness.as_ref(),
            st.smc.as_ref(),
            &st.flow,
            self.energy,
            &self.cfg.observables,
        )?;
        if progress {
            eprintln!(
                "[sweep] checks: {} ({:.1} s)",
                checks::verdict(&self.temps, &st.checks),
                t0.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

/// Run a sweep of a built-in system. Returns the result and the flow (for plots and saving).
pub fn run(cfg: &SweepConfig) -> Result<(SweepResult, Flow, Arc<dyn Energy>)> {
    validate(cfg)?;
    let energy = systems::build(&cfg.system, &cfg.params)?;
    run_on(cfg, energy)
}

/// Run a sweep of your own system ([`systems::custom()`], [`systems::expression()`]): checked
/// first for a Boltzmann distribution that exists up to T_max; `cfg.system` and
/// `cfg.params` are replaced by the energy's name and parameters.
pub fn run_energy(
    cfg: &SweepConfig,
    energy: Arc<dyn Energy>,
) -> Result<(SweepResult, Flow, Arc<dyn Energy>)> {
    validate(cfg)?;
    systems::check_normalisable(energy.as_ref(), cfg.t_max)?;
    let cfg = SweepConfig {
        system: energy.name().to_string(),
        params: Vec::new(),
        ..cfg.clone()
    };
    run_on(&cfg, energy)
}

/// The training budget when none is given, in steps (a seed then fixes the flow on any
/// machine): for coupling flows 5000 steps up to 2 modelled coordinates and 250 more per further
/// coordinate, at most 20 000 (5000 for 2-D systems, about 10 s on two cores; 7750 for the bead
/// chain's 13 bond lengths and angles; 12 750 for a 13-atom cluster's 33 modes); 10 000 for
/// lattice flows (a lattice coupling step costs ~30 times more; about 2 min on φ⁴, L = 8); the
/// angle flows' 5000 for `u1` and `xy` (their reverse-KL recipe, [`crate::gauge::AngleFlowConfig`]). These
/// match what the former defaults of 5 s per coordinate (10–300 s) and 120 s for lattices
/// bought on two cores. Where the flow falls short the repair continues training on the
/// failing range.
pub fn default_train_steps(energy: &dyn Energy) -> usize {
    match energy.structure() {
        systems::Structure::Lattice(_) => 10_000,
        systems::Structure::Gauge(_) | systems::Structure::Spins(_) => {
            crate::gauge::AngleFlowConfig::new(1.0)
                .train
                .steps
                .unwrap_or(5000)
        }
        _ => {
            let d = crate::coordinates::Coordinates::for_system(energy)
                .map_or(energy.dim(), |c| c.flow_dim());
            (5000 + 250 * d.saturating_sub(2)).min(20_000)
        }
    }
}

fn run_on(
    cfg: &SweepConfig,
    energy: Arc<dyn Energy>,
) -> Result<(SweepResult, Flow, Arc<dyn Energy>)> {
    let observables = crate::observables::resolve(&cfg.observables, energy.as_ref())?;
    for d in &cfg.derived {
        d.check(observables.len())?;
    }
    // Neither budget given: the system's default.
    let cfg = &SweepConfig {
        train_steps: match (cfg.train_seconds, cfg.train_steps) {
            (None, None) => Some(default_train_steps(energy.as_ref())),
            (_, steps) => steps,
        },
        observables,
        ..cfg.clone()
    };
    let draws = crate::memory::sample_rows(cfg.max_samples, energy.dim());
    crate::memory::check("drawing --max-samples samples", draws)?;
    let params = params_map(energy.as_ref());
    let mut history = History::default();
    let (flow, train) = match &cfg.load_model {
        Some(path) => {
            let flow = model::load_flow(path, cfg, energy.as_ref())?;
            if cfg.continue_training {
                model::continue_training(flow, energy.as_ref(), cfg, &mut history)?
            } else {
                let train = TrainSummary {
                    final_loss: f64::NAN,
                    loaded: true,
                    ..Default::default()
                };
                (flow, train)
            }
        }
        None => model::train_flow(energy.as_ref(), cfg, &mut history)?,
    };
    let sw = Sweeper {
        cfg,
        energy: energy.as_ref(),
        temps: temperature_grid(cfg.t_min, cfg.t_max, cfg.temps),
        seed: crate::rng::derive(cfg.seed, "sweep", 0),
    };
    let witness = sw.witness(0)?;
    let mut st = State {
        flow,
        witness,
        rounds: Rounds::unestimated(&sw.temps),
        estimate_seconds: 0.0,
        checks: Vec::new(),
        points: Vec::new(),
        repairs: Vec::new(),
        smc: None,
        tempering: None,
        train,
        history,
    };
    sw.check(&mut st)?;
    // Each method takes the temperatures that those before it leave failing ([`methods`]).
    // After a Ctrl-C (see `observe::interrupted`) the results so far are assembled and saved.
    for m in &cfg.methods {
        if crate::observe::interrupted() {
            break;
        }
        match m {
            Method::Importance => importance::run(&sw, &mut st)?,
            Method::FlowMcmc => flow_mcmc::run(&sw, &mut st)?,
            Method::Temper(settings) => temper::run(&sw, &mut st, settings)?,
            Method::Anneal => methods::anneal::run(&sw, &mut st)?,
        }
    }
    if let Some(path) = &cfg.save_model {
        let meta = io::system_meta(&cfg.system, sw.energy, &st.flow);
        io::save(&st.flow, meta, path)?;
    }
    let (result, flow) = assemble(&sw, st, params)?;
    Ok((result, flow, energy))
}

/// Each observable's ⟨O⟩(T) as [`Rounds::observables`] estimates it, with exact values where
/// known ([`crate::observables::exact_curves`]), then each derived quantity's from them.
fn observable_curves(sw: &Sweeper, rounds: &Rounds) -> Result<Vec<ObservableCurve>> {
    let (obs, temps) = (&sw.cfg.observables, &sw.temps);
    let exact = crate::observables::exact_curves(obs, sw.energy, temps)?;
    let est = rounds.observables(obs.len())?;
    let curve = |name: &str, e: Vec<Estimate>, exact, derived| ObservableCurve {
        name: name.to_string(),
        value: e.iter().map(|e| e.value).collect(),
        se: e.iter().map(|e| e.se).collect(),
        exact,
        derived,
    };
    let mut out: Vec<ObservableCurve> = (obs.iter().zip(&exact).enumerate())
        .map(|(k, (o, exact))| {
            let e = est.iter().map(|e| e[k].estimate()).collect();
            curve(o.name(), e, exact.clone(), false)
        })
        .collect();
    for d in &sw.cfg.derived {
        let e = (est.iter().zip(temps))
            .map(|(e, &t)| d.estimate(e, t))
            .collect::<Result<Vec<_>>>()?;
        let exact: Option<Vec<f64>> = (0..temps.len())
            .map(|i| {
                let at: Vec<Option<f64>> = exact.iter().map(|c| c.as_ref().map(|c| c[i])).collect();
                d.exact(&at, temps[i])
            })
            .collect();
        out.push(curve(d.name(), e, exact, true));
    }
    Ok(out)
}

/// The result (JSON schema and table) from the final state.
fn assemble(
    sw: &Sweeper,
    st: State,
    params: serde_json::Map<String, serde_json::Value>,
) -> Result<(SweepResult, Flow)> {
    let (cfg, temps) = (sw.cfg, &sw.temps);
    let rounds = st.rounds;
    let observables = observable_curves(sw, &rounds)?;
    let th = rounds.th;
    let us: Vec<Estimate> = th.iter().map(|t| t.u).collect();
    let deriv = cv_from_derivative(temps, &us)?;
    let exact: Option<Vec<Reference>> = reference(sw.energy, temps)?;
    let col = |f: &dyn Fn(&Thermo) -> f64| th.iter().map(f).collect::<Vec<f64>>();
    let trusted: Vec<bool> = st.checks.iter().map(checks::all_pass).collect();
    let smc_particles = st.smc.as_ref().map_or(0, |r| 2 * r.particles * r.replicas);
    let pt_sweeps = st.tempering.as_ref().map_or(0, |r| r.ladder_sweeps);
    let samples_used: Vec<usize> = (0..temps.len())
        .map(|i| {
            rounds.draws[i].u.len()
                + match &rounds.method[i] {
                    Estimator::FlowMcmc(c) => c.chains * (c.burn_in + c.steps + 1),
                    Estimator::Smc(_) => smc_particles,
                    Estimator::Tempering(_) => pt_sweeps,
                    Estimator::Importance | Estimator::Unestimated => 0,
                }
        })
        .collect();
    let method: Vec<String> = rounds.method.iter().map(|m| m.name().to_string()).collect();
    let cv_peak = (cfg.peak)
        .then(|| PeakReport::new(&th, &trusted, &method, sw.energy))
        .transpose()?;
    let flow_mcmc = rounds
        .method
        .iter()
        .map(|m| match m {
            Estimator::FlowMcmc(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let drawn: usize = rounds.draws.iter().map(|d| d.u.len()).sum();
    let config = serde_json::json!({
        "seed": cfg.seed,
        "train_seconds": cfg.train_seconds,
        "train_steps": cfg.train_steps,
        "samples": cfg.samples,
        "cv_tol": cfg.cv_tol,
        "max_samples": cfg.max_samples,
        "estimate_seconds": cfg.estimate_seconds,
        "witness_sweeps": cfg.witness_sweeps,
        "repairs": cfg.repairs,
        "methods": cfg.methods,
        "flow": cfg.flow,
        "load_model": cfg.load_model,
    });
    let result = SweepResult {
        system: cfg.system.clone(),
        params,
        temperatures: temps.clone(),
        u: col(&|t| t.u.value),
        u_se: col(&|t| t.u.se),
        cv: col(&|t| t.cv.value),
        cv_se: col(&|t| t.cv.se),
        cv_deriv: deriv.iter().map(|e| e.value).collect(),
        cv_deriv_se: deriv.iter().map(|e| e.se).collect(),
        cv_slope: col(&|t| t.dcv_dt.value),
        cv_slope_se: col(&|t| t.dcv_dt.se),
        log_z: col(&|t| t.log_z.value),
        log_z_se: col(&|t| t.log_z.se),
        f: col(&|t| t.f.value),
        s: col(&|t| t.s.value),
        ess_fraction: col(&|t| t.ess_fraction),
        pareto_k: col(&|t| t.pareto_k),
        samples_used,
        method,
        flow_mcmc,
        smc: st.smc,
        tempering: st.tempering,
        target_reached: rounds.reached,
        verdict: checks::verdict(temps, &st.checks),
        checks: st.checks,
        trusted,
        repairs: st.repairs,
        witness: st.witness.map(|w| WitnessSummary {
            points: st.points,
            rungs: w.rungs.clone(),
            round_trips: w.round_trips,
            ladders: w.ladders,
            sweeps: cfg.witness_sweeps,
            seconds: w.seconds,
        }),
        observables,
        exact: exact.map(|r| ExactCurves {
            u: r.iter().map(|x| x.u).collect(),
            cv: r.iter().map(|x| x.cv).collect(),
            log_z: r.iter().map(|x| x.log_z).collect(),
        }),
        cv_peak,
        train: st.train,
        samples: cfg.samples,
        estimate_seconds: st.estimate_seconds,
        estimate_samples_per_s: drawn as f64 / rounds.seconds.max(1e-9),
        config,
        thermoflow_version: env!("CARGO_PKG_VERSION").into(),
        loss_history: st.history.loss,
        thermo: th,
    };
    Ok((result, st.flow))
}
