//! The temperature sweep: train (or load) one temperature-conditioned flow over
//! [T_min, T_max], then at each of N evenly spaced temperatures draw M samples, reweight, and
//! report ⟨U⟩, C_V (fluctuation and d⟨U⟩/dT), log Z, F, S with standard errors, the ESS
//! fraction and the trusted flag, beside exact references where they exist.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{input_err, Error, Result};
use crate::estimators::{cv_from_derivative, thermo, Estimate, Thermo};
use crate::exact::{reference, Reference};
use crate::flows::{builders, io, Conditioning, CouplingConfig, Flow, Transformer};
use crate::systems::{self, check_temperature, Energy};
use crate::train::{train, History, Observer, Progress, TrainConfig, TrainReport};

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
    /// Training budget in seconds.
    pub train_seconds: f64,
    /// Samples per temperature for the estimates.
    pub samples: usize,
    /// Seed.
    pub seed: u64,
    /// Flow architecture.
    pub flow: CouplingConfig,
    /// Load a trained model instead of training.
    pub load_model: Option<PathBuf>,
    /// Save the trained model.
    pub save_model: Option<PathBuf>,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Default for SweepConfig {
    /// The default run: double-well-2d over [0.5, 3] at 32 temperatures, about a minute.
    fn default() -> Self {
        SweepConfig {
            system: "double-well-2d".into(),
            params: Vec::new(),
            t_min: 0.5,
            t_max: 3.0,
            temps: 32,
            train_seconds: 30.0,
            samples: 20_000,
            seed: 0,
            flow: default_flow(),
            load_model: None,
            save_model: None,
            progress: true,
        }
    }
}

/// The sweep's default flow: 6 rational-quadratic spline couplings (K = 8, B = 5), conditioner
/// 2×48 tanh.
pub fn default_flow() -> CouplingConfig {
    CouplingConfig {
        layers: 6,
        hidden: 48,
        depth: 2,
        activation: crate::flows::Activation::Tanh,
        transformer: Transformer::Spline {
            bins: 8,
            bound: 5.0,
        },
        seed: 0,
    }
}

/// Exact values beside the estimates.
#[derive(Clone, Debug, Serialize)]
pub struct ExactCurves {
    /// ⟨U⟩.
    #[serde(rename = "U")]
    pub u: Vec<f64>,
    /// C_V.
    #[serde(rename = "Cv")]
    pub cv: Vec<f64>,
    /// log Z.
    #[serde(rename = "logZ")]
    pub log_z: Vec<f64>,
}

/// Training summary in the JSON.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    /// Steps (0 when the model was loaded).
    pub steps: usize,
    /// Seconds.
    pub seconds: f64,
    /// Last reverse-KL loss.
    pub final_loss: f64,
    /// Flow samples per second during training.
    pub samples_per_s: f64,
    /// Whether the model was loaded instead of trained.
    pub loaded: bool,
}

/// The sweep's result; serialises to the documented JSON schema.
#[derive(Clone, Debug, Serialize)]
pub struct SweepResult {
    /// System name.
    pub system: String,
    /// All parameters, defaults filled in.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Temperatures.
    pub temperatures: Vec<f64>,
    /// ⟨U⟩.
    #[serde(rename = "U")]
    pub u: Vec<f64>,
    /// SE of ⟨U⟩.
    #[serde(rename = "U_se")]
    pub u_se: Vec<f64>,
    /// C_V (fluctuation).
    #[serde(rename = "Cv")]
    pub cv: Vec<f64>,
    /// SE of C_V.
    #[serde(rename = "Cv_se")]
    pub cv_se: Vec<f64>,
    /// C_V = d⟨U⟩/dT.
    #[serde(rename = "Cv_deriv")]
    pub cv_deriv: Vec<f64>,
    /// Its SE.
    #[serde(rename = "Cv_deriv_se")]
    pub cv_deriv_se: Vec<f64>,
    /// log Z.
    #[serde(rename = "logZ")]
    pub log_z: Vec<f64>,
    /// SE of log Z.
    #[serde(rename = "logZ_se")]
    pub log_z_se: Vec<f64>,
    /// F = −T log Z.
    #[serde(rename = "F")]
    pub f: Vec<f64>,
    /// S = (⟨U⟩ − F)/T.
    #[serde(rename = "S")]
    pub s: Vec<f64>,
    /// ESS / N.
    pub ess_fraction: Vec<f64>,
    /// ESS fraction above the threshold and no bad sample.
    pub trusted: Vec<bool>,
    /// Exact curves, or null.
    pub exact: Option<ExactCurves>,
    /// Training summary.
    pub train: TrainSummary,
    /// Samples per temperature.
    pub samples: usize,
    /// Seconds spent sampling and estimating.
    pub estimate_seconds: f64,
    /// Crate version.
    pub thermoflow_version: String,
    /// Loss history (step, seconds, loss) for the plot; not part of the JSON.
    #[serde(skip)]
    pub loss_history: Vec<(usize, f64, f64)>,
    /// Per-temperature estimates with all errors; not part of the JSON.
    #[serde(skip)]
    pub thermo: Vec<Thermo>,
}

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
    if cfg.samples < 2 {
        return input_err("--samples must be at least 2");
    }
    if (cfg.train_seconds.is_nan() || cfg.train_seconds <= 0.0) && cfg.load_model.is_none() {
        return input_err("--train-seconds must be positive");
    }
    Ok(())
}

/// Estimates at each temperature from `samples` flow samples.
pub fn estimate(
    flow: &Flow,
    energy: &dyn Energy,
    temps: &[f64],
    samples: usize,
    seed: u64,
) -> Result<Vec<Thermo>> {
    let mut rng = crate::rng::seeded(seed);
    temps
        .iter()
        .map(|&t| {
            let s = flow.sample_and_log_prob(samples, &[t], &mut rng)?;
            let u: Vec<f64> =
                s.x.rows()
                    .into_iter()
                    .map(|r| energy.energy(r.as_slice().unwrap()))
                    .collect();
            thermo(&u, &s.log_q, t)
        })
        .collect()
}

/// Run a sweep. Returns the result and the flow (for plots and saving).
pub fn run(cfg: &SweepConfig) -> Result<(SweepResult, Flow, Arc<dyn Energy>)> {
    validate(cfg)?;
    let energy = systems::build(&cfg.system, &cfg.params)?;
    let params = params_map(energy.as_ref());
    let mut history = History::default();
    let (flow, train_summary) = match &cfg.load_model {
        Some(path) => {
            let (flow, meta) = io::load(path)?;
            let sys = meta.get("system").and_then(|v| v.as_str()).unwrap_or("?");
            let same_params = meta.get("params").and_then(|v| v.as_object()) == Some(&params);
            if sys != cfg.system || !same_params || flow.dim() != energy.dim() {
                return Err(Error::Input(format!(
                    "model {} was trained for {sys} {}, not {} {}",
                    path.display(),
                    meta.get("params")
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    cfg.system,
                    serde_json::Value::Object(params.clone())
                )));
            }
            if let Conditioning::Temperature { t_min, t_max } = flow.conditioning() {
                if cfg.t_min < t_min * 0.999 || cfg.t_max > t_max * 1.001 {
                    eprintln!(
                        "warning: sweeping [{}, {}] with a model trained on [{t_min}, {t_max}]: outside it the flow extrapolates",
                        cfg.t_min, cfg.t_max
                    );
                }
            }
            (
                flow,
                TrainSummary {
                    steps: 0,
                    seconds: 0.0,
                    final_loss: f64::NAN,
                    samples_per_s: 0.0,
                    loaded: true,
                },
            )
        }
        None => {
            let mut fc = cfg.flow.clone();
            fc.seed = cfg.seed;
            let mut flow = builders::coupling_flow(
                energy.dim(),
                Conditioning::Temperature {
                    t_min: cfg.t_min,
                    t_max: cfg.t_max,
                },
                &fc,
            )?;
            let mut tc = TrainConfig::new(cfg.t_min, cfg.t_max);
            tc.seconds = Some(cfg.train_seconds);
            tc.seed = cfg.seed;
            let mut progress = Progress::new(1.0);
            let report: TrainReport = if cfg.progress {
                train(
                    &mut flow,
                    energy.as_ref(),
                    &tc,
                    &mut [&mut history as &mut dyn Observer, &mut progress],
                )?
            } else {
                train(
                    &mut flow,
                    energy.as_ref(),
                    &tc,
                    &mut [&mut history as &mut dyn Observer],
                )?
            };
            let summary = TrainSummary {
                steps: report.steps,
                seconds: report.seconds + report.data_seconds,
                final_loss: report.final_loss,
                samples_per_s: report.samples_per_s,
                loaded: false,
            };
            (flow, summary)
        }
    };
    if let Some(path) = &cfg.save_model {
        let meta = serde_json::json!({
            "system": cfg.system,
            "params": params,
            "t_min": cfg.t_min,
            "t_max": cfg.t_max,
            "thermoflow_version": env!("CARGO_PKG_VERSION"),
        });
        io::save(&flow, meta, path)?;
    }
    let temps = temperature_grid(cfg.t_min, cfg.t_max, cfg.temps);
    if cfg.progress {
        eprintln!(
            "[sweep] estimating at {} temperatures, {} samples each",
            temps.len(),
            cfg.samples
        );
    }
    let t0 = std::time::Instant::now();
    let th = estimate(
        &flow,
        energy.as_ref(),
        &temps,
        cfg.samples,
        cfg.seed.wrapping_add(1),
    )?;
    let estimate_seconds = t0.elapsed().as_secs_f64();
    let us: Vec<Estimate> = th.iter().map(|t| t.u).collect();
    let deriv = cv_from_derivative(&temps, &us)?;
    let exact: Option<Vec<Reference>> = reference(energy.as_ref(), &temps)?;
    let col = |f: &dyn Fn(&Thermo) -> f64| th.iter().map(f).collect::<Vec<f64>>();
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
        log_z: col(&|t| t.log_z.value),
        log_z_se: col(&|t| t.log_z.se),
        f: col(&|t| t.f.value),
        s: col(&|t| t.s.value),
        ess_fraction: col(&|t| t.ess_fraction),
        trusted: th.iter().map(|t| t.trusted).collect(),
        exact: exact.map(|r| ExactCurves {
            u: r.iter().map(|x| x.u).collect(),
            cv: r.iter().map(|x| x.cv).collect(),
            log_z: r.iter().map(|x| x.log_z).collect(),
        }),
        train: train_summary,
        samples: cfg.samples,
        estimate_seconds,
        thermoflow_version: env!("CARGO_PKG_VERSION").into(),
        loss_history: history.loss,
        thermo: th,
    };
    Ok((result, flow, energy))
}

impl SweepResult {
    /// A readable table (one row per temperature).
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} {}\n{:>7} {:>20} {:>19} {:>19} {:>19} {:>6} {:>5}\n",
            self.system,
            serde_json::Value::Object(self.params.clone()),
            "T",
            "⟨U⟩ ± se (exact)",
            "C_V ± se (exact)",
            "dU/dT ± se",
            "log Z ± se (exact)",
            "ESS",
            "trust"
        );
        for i in 0..self.temperatures.len() {
            let ex = |v: Option<&Vec<f64>>| v.map(|v| format!("({:.3})", v[i])).unwrap_or_default();
            let e = self.exact.as_ref();
            s += &format!(
                "{:7.3} {:>20} {:>19} {:>19} {:>19} {:6.3} {:>5}\n",
                self.temperatures[i],
                format!(
                    "{:.3}±{:.3}{}",
                    self.u[i],
                    self.u_se[i],
                    ex(e.map(|e| &e.u))
                ),
                format!(
                    "{:.3}±{:.3}{}",
                    self.cv[i],
                    self.cv_se[i],
                    ex(e.map(|e| &e.cv))
                ),
                format!("{:.3}±{:.3}", self.cv_deriv[i], self.cv_deriv_se[i]),
                format!(
                    "{:.3}±{:.3}{}",
                    self.log_z[i],
                    self.log_z_se[i],
                    ex(e.map(|e| &e.log_z))
                ),
                self.ess_fraction[i],
                if self.trusted[i] { "yes" } else { "NO" }
            );
        }
        s += &format!(
            "training: {} steps, {:.1} s, final loss {:.4}; estimates: {} samples/T in {:.1} s\n",
            self.train.steps,
            self.train.seconds,
            self.train.final_loss,
            self.samples,
            self.estimate_seconds
        );
        s
    }

    /// Largest |C_V − exact|/exact over the grid (None without an exact reference).
    pub fn max_cv_rel_error(&self) -> Option<f64> {
        let e = self.exact.as_ref()?;
        Some(
            self.cv
                .iter()
                .zip(&e.cv)
                .map(|(a, b)| ((a - b) / b).abs())
                .fold(0.0, f64::max),
        )
    }
}
