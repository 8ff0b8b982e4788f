//! `thermoflow causal`: fit a causal flow on a CSV file with a DAG, or on draws from the
//! built-in linear SCM, and print E[target | do(treatment = a)] and E[target | treatment = a].

use std::path::PathBuf;

use clap::Args;
use thermoflow::causal::{run_causal, CausalConfig, Data};

use super::{check_writable, json_text, out, write_file, Failure};

/// Arguments of `causal`.
#[derive(Args)]
pub struct CausalArgs {
    /// A parameter of the built-in SCM W → X → Y, W → Y, repeatable (a, b, c, …) [default: the SCM's own]
    #[arg(long = "param", value_name = "KEY=VALUE", conflicts_with = "csv")]
    params: Vec<String>,
    /// Data: a CSV file with a header naming the DAG's variables [default: draws from the SCM]
    #[arg(long, value_name = "FILE", requires = "dag")]
    csv: Option<PathBuf>,
    /// The DAG of the CSV data in causal order, e.g. 'W; X <- W; Y <- W, X' [default: none]
    #[arg(long, requires = "csv")]
    dag: Option<String>,
    /// The intervened variable
    #[arg(long, default_value = "X")]
    treatment: String,
    /// The variable whose mean is estimated
    #[arg(long, default_value = "Y")]
    target: String,
    /// Treatment values, comma-separated
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "-2,-1,0,1,2",
        allow_negative_numbers = true
    )]
    values: Vec<f64>,
    /// Draws from the SCM
    #[arg(long, default_value_t = 20_000)]
    n: usize,
    /// Optimiser steps of the fit
    #[arg(long, default_value_t = 10_000)]
    steps: usize,
    /// Seed of every random choice
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the results as JSON to FILE [default: not written]
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

impl CausalArgs {
    /// Fit, estimate and write.
    pub fn run(self) -> Result<(), Failure> {
        check_writable(&[self.json.as_ref()])?;
        let data = match (self.csv, self.dag) {
            (Some(path), Some(dag)) => Data::Csv { path, dag },
            _ => Data::Scm {
                params: self.params,
                n: self.n,
            },
        };
        let cfg = CausalConfig {
            data,
            treatment: self.treatment,
            target: self.target,
            values: self.values,
            steps: self.steps,
            seed: self.seed,
        };
        let report = run_causal(&cfg)?;
        out(&report.table());
        if let Some(path) = &self.json {
            write_file(path, &json_text(&report)?)?;
        }
        Ok(())
    }
}
