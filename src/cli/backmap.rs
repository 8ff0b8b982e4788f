//! `thermoflow backmap`: coarse-grained → fine backmapping flows on the bead chain, trained
//! with and without the energy term, compared on held-out structures.

use std::path::PathBuf;

use clap::Args;
use thermoflow::backmap::{compare_bead_chain, BackmapConfig};

use super::{check_writable, json_text, out, write_file, Failure};

fn d() -> BackmapConfig {
    BackmapConfig::default()
}

/// Arguments of `backmap`.
#[derive(Args)]
pub struct BackmapArgs {
    /// The system (backmapping is defined for the bead chain)
    #[arg(long, default_value = "bead-chain", value_parser = ["bead-chain"])]
    system: String,
    /// A bead-chain parameter, repeatable [default: the system's own]
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Temperatures, comma-separated: one model is trained over their span (conditioned on
    /// T) and compared at each
    #[arg(long, value_delimiter = ',', default_values_t = d().temps, allow_negative_numbers = true)]
    temp: Vec<f64>,
    /// Fine beads per coarse bead
    #[arg(long, default_value_t = d().group)]
    group: usize,
    /// Training steps
    #[arg(long, default_value_t = d().steps)]
    steps: usize,
    /// Seed of every random choice
    #[arg(long, default_value_t = d().seed)]
    seed: u64,
    /// Write the results as JSON to FILE [default: not written]
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

impl BackmapArgs {
    /// Train both flows, compare and write.
    pub fn run(self) -> Result<(), Failure> {
        check_writable(&[self.json.as_ref()])?;
        let cfg = BackmapConfig {
            temps: self.temp,
            group: self.group,
            steps: self.steps,
            seed: self.seed,
            ..d()
        };
        let temperatures = compare_bead_chain(&self.params, &cfg)?;
        let v =
            serde_json::json!({"system": self.system, "config": cfg, "temperatures": temperatures});
        let text = json_text(&v)?;
        out(&format!("{text}\n"));
        if let Some(path) = &self.json {
            write_file(path, &text)?;
        }
        Ok(())
    }
}
