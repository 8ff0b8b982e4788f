//! `thermoflow mcmc`: one sampler at one temperature (flow-MCMC, HMC or random-walk
//! Metropolis); prints and writes its estimates as JSON.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::Args;
use thermoflow::mcmc::{run_mcmc, McmcConfig, Sampler};
use thermoflow::observables;

use super::{check_writable, json_text, out, positive, write_file, Failure};

/// Arguments of `mcmc`.
#[derive(Args)]
pub struct McmcArgs {
    /// Built-in system (see `thermoflow systems`)
    #[arg(long, default_value = "phi4")]
    system: String,
    /// A system parameter, repeatable (e.g. --param L=8) [default: the system's own]
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// The sampler
    #[arg(long, default_value = "hmc", value_parser = PossibleValuesParser::new(["flow", "hmc", "rwm"]))]
    sampler: String,
    /// Temperature
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temp: f64,
    /// Steps per chain after burn-in [default: 2000 for flow, 5000 otherwise]
    #[arg(long)]
    steps: Option<usize>,
    /// Flow and HMC samplers: run the same chains on, doubling their length, up to this many steps while they are shorter than 20 τ_int (the errors need it) [default: 8 × --steps; equal to --steps: exactly --steps]
    #[arg(long)]
    max_steps: Option<usize>,
    /// Flow sampler: every N-th step an HMC trajectory instead of a flow proposal; 0: the flow alone [default: 2 on u1, 0 on phi4, 5 otherwise]
    #[arg(long, value_name = "N")]
    local_every: Option<usize>,
    /// Parallel chains [default: 64 for flow, 8 otherwise]
    #[arg(long)]
    chains: Option<usize>,
    /// Training budget of the flow sampler in steps (reproducible on any machine) [default: 10000 on phi4, 5000 otherwise]
    #[arg(long)]
    train_steps: Option<usize>,
    /// Wall-time limit of the flow sampler's training in seconds, instead of the step budget (the result then depends on the machine's speed) [default: none]
    #[arg(long, value_parser = positive, conflicts_with = "train_steps")]
    train_seconds: Option<f64>,
    /// Seed of every random choice
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// An observable to average along the chains, repeatable, as `sweep --observe` takes it: an
    /// expression in x0, x1, … (NAME= names it) or the system's own by name (JSON
    /// `observables`: value, se, tau_int, exact for 1-D and 2-D systems) [default: none]
    #[arg(
        long = "observe",
        value_name = "[NAME=]EXPR",
        allow_hyphen_values = true
    )]
    observe: Vec<String>,
    /// A quantity derived from the observables' averages, repeatable, as `sweep --derive` takes
    /// it: NAME=EXPR over the --observe names and T (JSON `observables`, after them, with
    /// "derived": true; by the jackknife over the batches) [default: none]
    #[arg(long = "derive", value_name = "NAME=EXPR", allow_hyphen_values = true)]
    derive: Vec<String>,
    /// Write the results as JSON to FILE [default: not written]
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Save the flow sampler's trained flow to FILE (loadable by every command) [default: not saved]
    #[arg(
        long,
        value_name = "FILE",
        alias = "save-flow",
        conflicts_with = "load_model"
    )]
    save_model: Option<PathBuf>,
    /// Use a saved flow as the proposal instead of training [default: train a new one]
    #[arg(long, value_name = "FILE")]
    load_model: Option<PathBuf>,
    /// No progress on stderr
    #[arg(long)]
    quiet: bool,
}

impl McmcArgs {
    /// Run the sampler and write its estimates.
    pub fn run(self) -> Result<(), Failure> {
        check_writable(&[self.json.as_ref(), self.save_model.as_ref()])?;
        let sampler: Sampler = self.sampler.parse()?;
        if sampler != Sampler::Flow
            && (self.save_model.is_some()
                || self.load_model.is_some()
                || self.local_every.is_some())
        {
            return Err(Failure::Usage(
                "--save-model, --load-model and --local-every need --sampler flow".into(),
            ));
        }
        let d = McmcConfig::new(&self.system, sampler);
        let (observables, derived) = observables::parse_flags(&self.observe, &self.derive)?;
        let cfg = McmcConfig {
            params: self.params,
            t: self.temp,
            steps: self.steps.unwrap_or(d.steps),
            max_steps: self.max_steps,
            chains: self.chains.unwrap_or(d.chains),
            local_every: self.local_every,
            train_steps: self.train_steps.unwrap_or(d.train_steps),
            train_seconds: self.train_seconds,
            seed: self.seed,
            progress: !self.quiet,
            load_model: self.load_model,
            save_model: self.save_model,
            observables,
            derived,
            ..d
        };
        let (report, _) = run_mcmc(&cfg)?;
        let text = json_text(&report)?;
        out(&format!("{text}\n"));
        if let Some(path) = &self.json {
            write_file(path, &text)?;
        }
        Ok(())
    }
}
