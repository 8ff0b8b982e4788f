//! The `causal` command's work: fit a causal flow on data (a CSV file with a DAG, or draws
//! from the built-in linear SCM), then estimate E[target | do(treatment = a)] and
//! E[target | treatment = a] at chosen values, beside the SCM's closed forms where known.

use std::path::PathBuf;

use ndarray::Array2;
use serde::Serialize;

use super::{CausalFlow, Dag, LinearScm};
use crate::error::{input_err, Error, Result};
use crate::estimators::Estimate;
use crate::systems::Params;

/// Where the data come from.
#[derive(Clone, Debug)]
pub enum Data {
    /// `n` draws from the built-in SCM with these `key=value` parameters.
    Scm {
        /// Its parameters (a, b, c, noise scales).
        params: Vec<String>,
        /// Number of draws.
        n: usize,
    },
    /// A CSV file with a header naming the DAG's variables.
    Csv {
        /// The file.
        path: PathBuf,
        /// The DAG, e.g. `W; X <- W; Y <- W, X`.
        dag: String,
    },
}

/// What to run.
#[derive(Clone, Debug)]
pub struct CausalConfig {
    /// The data.
    pub data: Data,
    /// Intervened variable.
    pub treatment: String,
    /// Variable whose mean is estimated.
    pub target: String,
    /// Treatment values.
    pub values: Vec<f64>,
    /// Optimiser steps of the fit.
    pub steps: usize,
    /// Seed.
    pub seed: u64,
}

/// One treatment value's estimates.
#[derive(Clone, Debug, Serialize)]
pub struct CausalRow {
    /// The treatment value a.
    pub value: f64,
    /// E[target | do(treatment = a)].
    pub do_mean: f64,
    /// Its standard error.
    pub do_se: f64,
    /// The SCM's closed form, when the data came from it.
    pub do_exact: Option<f64>,
    /// E[target | treatment = a].
    pub cond_mean: f64,
    /// Its standard error.
    pub cond_se: f64,
    /// The SCM's closed form, when the data came from it.
    pub cond_exact: Option<f64>,
}

/// The result (the `causal` JSON).
#[derive(Clone, Debug, Serialize)]
pub struct CausalReport {
    /// Variables in causal order.
    pub variables: Vec<String>,
    /// Treatment and target.
    pub treatment: String,
    /// Target.
    pub target: String,
    /// Rows of data fitted.
    pub rows: usize,
    /// Final negative log-likelihood per row.
    pub final_nll: f64,
    /// The SCM, when the data came from it.
    pub scm: Option<LinearScm>,
    /// One row per treatment value.
    pub results: Vec<CausalRow>,
}

impl CausalReport {
    /// A fixed-width table of the results.
    pub fn table(&self) -> String {
        let mut text = format!(
            "causal flow on {:?}, {} samples, final NLL {:.4}\n{:>8} {:>22} {:>10} {:>22} {:>10}\n",
            self.variables,
            self.rows,
            self.final_nll,
            self.treatment,
            "E[target|do] ± se",
            "closed",
            "E[target|given] ± se",
            "closed"
        );
        let f = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.4}"));
        for r in &self.results {
            text += &format!(
                "{:>8.3} {:>22} {:>10} {:>22} {:>10}\n",
                r.value,
                format!("{:.4} ± {:.4}", r.do_mean, r.do_se),
                f(r.do_exact),
                format!("{:.4} ± {:.4}", r.cond_mean, r.cond_se),
                f(r.cond_exact)
            );
        }
        text
    }
}

/// Fit and estimate.
pub fn run_causal(cfg: &CausalConfig) -> Result<CausalReport> {
    if cfg.values.iter().any(|v| !v.is_finite()) || cfg.values.is_empty() {
        return input_err("treatment values must be finite, at least one");
    }
    if cfg.steps == 0 {
        return input_err("--steps must be ≥ 1");
    }
    let (dag, data, scm) = match &cfg.data {
        Data::Csv { path, dag } => {
            let dag = Dag::parse(dag)?;
            let data = read_csv(path, &dag.names)?;
            (dag, data, None)
        }
        Data::Scm { params, n } => {
            if *n < 10 {
                return input_err("--n must be at least 10");
            }
            crate::memory::check("the SCM's draws", crate::memory::sample_rows(*n, 3))?;
            let scm = LinearScm::from_params(&Params::parse(params)?)?;
            let mut rng = crate::rng::seeded(cfg.seed);
            (LinearScm::dag(), scm.sample(*n, &mut rng), Some(scm))
        }
    };
    let (tr, tg) = (dag.index(&cfg.treatment)?, dag.index(&cfg.target)?);
    let mut flow = CausalFlow::new(dag.clone(), 16, cfg.seed);
    let nll = flow.fit(data.view(), cfg.steps, 1024, 2e-3, cfg.seed)?;
    let mut results = Vec::new();
    // One stream per estimator, the same at every value (common random numbers across values).
    let seed_for = |what| crate::rng::derive(cfg.seed, what, 0);
    for &a in &cfg.values {
        let d: Estimate = flow.interventional_mean(tg, tr, a, 40_000, seed_for("causal/do"))?;
        let c: Estimate = flow.conditional_mean(tg, tr, a, 40_000, seed_for("causal/see"))?;
        results.push(CausalRow {
            value: a,
            do_mean: d.value,
            do_se: d.se,
            do_exact: scm.map(|s| s.interventional_mean(a)),
            cond_mean: c.value,
            cond_se: c.se,
            cond_exact: scm.map(|s| s.conditional_mean(a)),
        });
    }
    Ok(CausalReport {
        variables: dag.names.clone(),
        treatment: cfg.treatment.clone(),
        target: cfg.target.clone(),
        rows: data.nrows(),
        final_nll: nll,
        scm,
        results,
    })
}

/// The columns `names` of a CSV file with a header row, as finite numbers (at least 10 rows);
/// an error names the file, the line and what is wrong.
pub fn read_csv(path: &std::path::Path, names: &[String]) -> Result<Array2<f64>> {
    let p = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| Error::Io(format!("cannot read {p}: {e}")))?;
    let header = reader
        .headers()
        .map_err(|e| Error::Io(format!("{p}: {e}")))?
        .clone();
    let cols = names
        .iter()
        .map(|nm| {
            header
                .iter()
                .position(|h| h == nm)
                .ok_or_else(|| Error::Input(format!("{p} has no column {nm:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut values = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| Error::Io(format!("{p}: line {line}: {e}")))?;
        for &c in &cols {
            let v: f64 = record[c].parse().unwrap_or(f64::NAN);
            if !v.is_finite() {
                return input_err(format!(
                    "{p}: line {line}, column {:?}: {:?} is not a finite number",
                    &header[c], &record[c]
                ));
            }
            values.push(v);
        }
    }
    let rows = values.len() / names.len().max(1);
    if rows < 10 {
        return input_err(format!("{p}: too few rows ({rows}; at least 10)"));
    }
    Array2::from_shape_vec((rows, names.len()), values).map_err(|e| Error::Engine(e.to_string()))
}
