//! `thermoflow sweep`: train (or load) one temperature-conditioned flow over [T_min, T_max],
//! estimate at every grid temperature until C_V reaches the tolerance, check and repair, and
//! write the table, JSON, HTML report and model.

use std::path::PathBuf;

use clap::Args;
use thermoflow::observables;
use thermoflow::sweep::{self, SweepConfig, DEFAULT_CV_TOL};

use super::{check_writable, json_text, out, positive, write_file, Failure};

/// The library's defaults, which the flags show.
fn d() -> SweepConfig {
    SweepConfig::default()
}

/// Arguments of `sweep`.
#[derive(Args)]
pub struct SweepArgs {
    /// Built-in system (see `thermoflow systems`)
    #[arg(long, default_value_t = d().system)]
    system: String,
    /// A system parameter, repeatable (e.g. --param a=2) [default: the system's own]
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Your own potential instead of --system: an expression in x0, x1, … with + - * / ^,
    /// parentheses, numbers and exp log sqrt sin cos, e.g. 'x0^4 - 3*x0^2 + 0.5*(x1 - x0)^2'
    /// [default: none]
    #[arg(long, value_name = "EXPR", conflicts_with_all = ["system", "params"], allow_hyphen_values = true)]
    energy: Option<String>,
    /// Coordinates of --energy [default: one more than the highest index it uses]
    #[arg(long, value_name = "D", requires = "energy")]
    dim: Option<usize>,
    /// Lowest temperature
    #[arg(long, default_value_t = d().t_min, allow_negative_numbers = true)]
    tmin: f64,
    /// Highest temperature
    #[arg(long, default_value_t = d().t_max, allow_negative_numbers = true)]
    tmax: f64,
    /// Number of temperatures on the grid (evenly spaced)
    #[arg(long, default_value_t = d().temps)]
    temps: usize,
    /// Wall-time limit of training in seconds, instead of the step budget (the result then depends on the machine's speed) [default: none]
    #[arg(long, value_parser = positive)]
    train_seconds: Option<f64>,
    /// Training budget in steps (reproducible on any machine) [default: 5000, plus 250 per coordinate the flow models beyond 2, at most 20000; 10000 for lattice fields]
    #[arg(long)]
    train_steps: Option<usize>,
    /// Samples per temperature in the first round
    #[arg(long, default_value_t = d().samples)]
    samples: usize,
    /// Target relative standard error of C_V; 0: one round of --samples
    #[arg(long, default_value_t = DEFAULT_CV_TOL, allow_negative_numbers = true)]
    cv_tol: f64,
    /// Most samples per temperature [default: 1000000, or --samples if larger]
    #[arg(long)]
    max_samples: Option<usize>,
    /// Wall-time limit in seconds of each estimation stage (sampling rounds, tempering, annealing); the result then depends on the machine's speed [default: none]
    #[arg(long, allow_negative_numbers = true)]
    estimate_seconds: Option<f64>,
    /// Sweeps of the parallel-tempering witness (0: no witness)
    #[arg(long, default_value_t = d().witness_sweeps)]
    witness_sweeps: usize,
    /// Rounds of retraining where importance sampling fails (with `is` among --methods; none where only the weights' tail fails and flow-mcmc follows)
    #[arg(long, default_value_t = d().repairs)]
    repairs: usize,
    /// Estimation methods in the order the sweep escalates through them, comma-separated: is
    /// (importance sampling from the flow), flow-mcmc (where only the weights' tail fails),
    /// temper (parallel tempering with flow proposals), anneal (sequential Monte Carlo down the
    /// grid and back); each takes the temperatures the ones before leave failing
    #[arg(long, default_value_t = thermoflow::sweep::methods::names(&d().methods))]
    methods: String,
    /// Seed of every random choice
    #[arg(long, default_value_t = d().seed)]
    seed: u64,
    /// An observable whose average ⟨O⟩(T) is estimated beside ⟨U⟩, repeatable: an expression in
    /// x0, x1, … as --energy takes it, named by NAME= or by its text, e.g. --observe x0 --observe
    /// 'r2 = x0^2 + x1^2' (table, JSON `observables`, CSV columns NAME, NAME_se, NAME_exact)
    /// [default: none]
    #[arg(
        long = "observe",
        value_name = "[NAME=]EXPR",
        allow_hyphen_values = true
    )]
    observe: Vec<String>,
    /// A quantity derived from the observables' averages at each temperature, repeatable:
    /// NAME=EXPR over the --observe names and T, e.g. --observe x0 --observe 'x2 = x0^2'
    /// --derive 'var = x2 - x0^2'; by the jackknife over the samplers' groups, bias-corrected,
    /// with the observables' correlation (reported after them, in the same places) [default: none]
    #[arg(long = "derive", value_name = "NAME=EXPR", allow_hyphen_values = true)]
    derive: Vec<String>,
    /// Locate the heat capacity's peak: T* and C_V(T*) with errors, from C_V and dC_V/dT near the
    /// grid's largest C_V, its own trust verdict and the exact peak where known (a table line,
    /// JSON `cv_peak`)
    #[arg(long)]
    peak: bool,
    /// Write the results as JSON to FILE [default: not written]
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write an HTML report with interactive plots to FILE [default: not written]
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Write one row per temperature (every column of the table, exact ones where known) as CSV to FILE [default: not written]
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Write samples with their importance weights at --samples-at to FILE (.npy, else CSV) [default: not written]
    #[arg(long, value_name = "FILE")]
    samples_out: Option<PathBuf>,
    /// Temperatures of --samples-out, comma-separated; --samples samples each [default: T_min, the middle and T_max]
    #[arg(
        long,
        value_name = "T,T,…",
        value_delimiter = ',',
        requires = "samples_out"
    )]
    samples_at: Vec<f64>,
    /// Save the trained flow to FILE [default: not saved]
    #[arg(long, value_name = "FILE")]
    save_model: Option<PathBuf>,
    /// Use a saved flow; with --train-seconds or --train-steps, continue training it first [default: train a new one]
    #[arg(long, value_name = "FILE")]
    load_model: Option<PathBuf>,
    /// No progress on stderr
    #[arg(long)]
    quiet: bool,
}

impl SweepArgs {
    /// Run the sweep and write its outputs.
    pub fn run(self) -> Result<(), Failure> {
        check_writable(&[
            self.json.as_ref(),
            self.html.as_ref(),
            self.csv.as_ref(),
            self.samples_out.as_ref(),
            self.save_model.as_ref(),
        ])?;
        let custom = match &self.energy {
            Some(text) => Some(thermoflow::systems::expression(text, self.dim)?),
            None => None,
        };
        let d = d();
        let (observables, derived) = observables::parse_flags(&self.observe, &self.derive)?;
        let cfg = SweepConfig {
            system: self.system,
            params: self.params,
            t_min: self.tmin,
            t_max: self.tmax,
            temps: self.temps,
            // Neither budget: the system's default; a step budget alone makes the run
            // reproducible on any machine (no time limit).
            train_seconds: self.train_seconds,
            train_steps: self.train_steps,
            samples: self.samples,
            cv_tol: (self.cv_tol != 0.0).then_some(self.cv_tol),
            max_samples: self.max_samples.unwrap_or(d.max_samples.max(self.samples)),
            estimate_seconds: self.estimate_seconds,
            witness_sweeps: self.witness_sweeps,
            repairs: self.repairs,
            methods: thermoflow::sweep::Method::parse_list(&self.methods)?,
            seed: self.seed,
            continue_training: self.load_model.is_some()
                && (self.train_seconds.is_some() || self.train_steps.is_some()),
            load_model: self.load_model,
            save_model: self.save_model,
            progress: !self.quiet,
            observables,
            derived,
            peak: self.peak,
            ..d
        };
        let (result, flow, energy) = match custom {
            Some(e) => sweep::run_energy(&cfg, std::sync::Arc::new(e))?,
            None => sweep::run(&cfg)?,
        };
        out(&result.table());
        if let Some(path) = &self.json {
            write_file(path, &json_text(&result)?)?;
        }
        if let Some(path) = &self.csv {
            write_file(path, &result.to_csv()?)?;
        }
        if let Some(path) = &self.samples_out {
            let temps = match self.samples_at.as_slice() {
                [] => vec![cfg.t_min, 0.5 * (cfg.t_min + cfg.t_max), cfg.t_max],
                t => t.to_vec(),
            };
            sweep::write_samples(&flow, energy.as_ref(), &temps, cfg.samples, cfg.seed, path)?;
        }
        if let Some(path) = &self.html {
            let figs = thermoflow::plot::sweep_figures(&result, &flow, energy.as_ref())?;
            let title = format!("thermoflow sweep: {}", result.system);
            let page = thermoflow::plot::report_html(&title, &result.table(), &figs);
            write_file(path, &page)?;
            eprintln!("[sweep] wrote {}", path.display());
        }
        Ok(())
    }
}
