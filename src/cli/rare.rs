//! `thermoflow rare`: P(event) at one temperature by importance sampling with a flow trained
//! on the event, against a reference flow (trained, or a saved model of the system), beside
//! quadrature where it exists.

use std::path::PathBuf;

use clap::Args;
use thermoflow::flows::io;
use thermoflow::rare::{estimate_with, Event, RareConfig};

use super::{check_writable, json_text, out, positive, write_file, Failure};

/// Arguments of `rare`.
#[derive(Args)]
pub struct RareArgs {
    /// Built-in system (see `thermoflow systems`)
    #[arg(long, default_value = "double-well-2d")]
    system: String,
    /// A system parameter, repeatable [default: the system's own]
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// The event: a coordinate above or below a value (x0>0, x1<-2) or the energy above one (U>3)
    #[arg(long, allow_hyphen_values = true)]
    event: String,
    /// Temperature
    #[arg(long, default_value_t = 0.4, allow_negative_numbers = true)]
    temp: f64,
    /// Samples from each flow
    #[arg(long, default_value_t = 100_000)]
    samples: usize,
    /// Training budget of each of the two flows in steps (reproducible on any machine)
    #[arg(long, default_value_t = 3000)]
    train_steps: usize,
    /// Wall-time limit of each flow's training in seconds, instead of the step budget (the result then depends on the machine's speed) [default: none]
    #[arg(long, value_parser = positive)]
    train_seconds: Option<f64>,
    /// Seed of every random choice
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the results as JSON to FILE [default: not written]
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Save the reference flow (a model of the system over [T/1.25, 1.25 T]) to FILE [default: not saved]
    #[arg(long, value_name = "FILE")]
    save_model: Option<PathBuf>,
    /// Use a saved model of the system (e.g. a sweep's) as the reference flow instead of training one [default: train it]
    #[arg(long, value_name = "FILE")]
    load_model: Option<PathBuf>,
    /// No progress on stderr
    #[arg(long)]
    quiet: bool,
}

impl RareArgs {
    /// Estimate and write.
    pub fn run(self) -> Result<(), Failure> {
        check_writable(&[self.json.as_ref(), self.save_model.as_ref()])?;
        let event = Event::parse(&self.event)?;
        let energy = thermoflow::systems::build(&self.system, &self.params)?;
        let reference = match &self.load_model {
            Some(path) => Some(io::load_for(path, &self.system, energy.as_ref())?),
            None => None,
        };
        let cfg = RareConfig {
            samples: self.samples,
            train_steps: self.train_steps,
            train_seconds: self.train_seconds,
            seed: self.seed,
            progress: !self.quiet,
            reference,
        };
        let (r, reference) = estimate_with(energy.clone(), event, self.temp, &cfg)?;
        if let Some(path) = &self.save_model {
            let meta = io::system_meta(&self.system, energy.as_ref(), &reference);
            io::save(&reference, meta, path)?;
        }
        let exact = r
            .p_exact
            .map_or_else(|| "n/a".into(), |p| format!("{p:.4e}"));
        out(&format!(
            "P({}) at T = {}: {:.4e} ± {:.2e}  exact {exact}  variance reduction per evaluation {:.3e}\n",
            r.event, r.temperature, r.p, r.p_se, r.variance_reduction
        ));
        if let Some(path) = &self.json {
            let mut v = serde_json::to_value(&r).map_err(|e| Failure::Run(e.to_string()))?;
            v["system"] = serde_json::json!(self.system);
            write_file(path, &json_text(&v)?)?;
        }
        Ok(())
    }
}
