//! The `thermoflow` command line: one file per command, each a clap-derived argument struct
//! with a `run` that calls the library and writes what it returns.
//!
//! Conventions shared by every command: `--system NAME` and repeatable `--param KEY=VALUE`,
//! `--json FILE` writes the command's result as JSON to FILE, `--save-model FILE` /
//! `--load-model FILE` wherever a command trains a flow, `--seed`, `--quiet`. Usage errors exit
//! with 2, failures at run time with 1; every output path is checked writable before work
//! starts, and the first Ctrl-C stops training at its next step with results still written.

pub mod backmap;
pub mod bench;
pub mod causal;
pub mod mcmc;
pub mod rare;
pub mod sweep;
pub mod systems;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};

/// thermoflow: temperature-conditioned normalizing flows for statistical mechanics.
#[derive(Parser)]
#[command(name = "thermoflow", version, about, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Where flows sample, evaluate densities and train: `cpu`, `cuda` (an NVIDIA GPU; a build
    /// with `--features cuda`) or `wgpu` (Metal, Vulkan, DX12; `--features wgpu`); energies are
    /// evaluated on the host
    #[arg(long, global = true, default_value = "cpu", value_parser = clap::builder::PossibleValuesParser::new(["cpu", "cuda", "wgpu"]))]
    pub device: String,
}

impl Cli {
    /// Select the device, then run the command.
    pub fn run(self) -> Result<(), Failure> {
        thermoflow::engine::device::select(&self.device)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        self.command.run()
    }
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// One flow for a whole temperature range: U(T), C_V(T), log Z with error bars and trust checks.
    Sweep(sweep::SweepArgs),
    /// One sampler (flow-MCMC, HMC, random-walk Metropolis) at one temperature.
    Mcmc(mcmc::McmcArgs),
    /// The probability of a rare event by flow importance sampling.
    Rare(rare::RareArgs),
    /// A causal flow: interventional and conditional means from data or the built-in SCM.
    Causal(causal::CausalArgs),
    /// Coarse-grained to fine backmapping on the bead chain, with and without the energy term.
    Backmap(backmap::BackmapArgs),
    /// The built-in systems and their parameters.
    Systems(systems::SystemsArgs),
    /// Throughput and time-to-accuracy benchmarks (JSON on stdout).
    Bench(bench::BenchArgs),
}

impl Command {
    /// Run the command.
    pub fn run(self) -> Result<(), Failure> {
        match self {
            Command::Sweep(a) => a.run(),
            Command::Mcmc(a) => a.run(),
            Command::Rare(a) => a.run(),
            Command::Causal(a) => a.run(),
            Command::Backmap(a) => a.run(),
            Command::Systems(a) => a.run(),
            Command::Bench(a) => a.run(),
        }
    }
}

/// A command-line failure: usage errors exit with 2, everything else with 1.
#[derive(Debug)]
pub enum Failure {
    /// Arguments that do not make sense together.
    Usage(String),
    /// The work failed.
    Run(String),
    /// Ctrl-C stopped the work before it had anything to give.
    Interrupted(String),
}

impl From<thermoflow::Error> for Failure {
    fn from(e: thermoflow::Error) -> Failure {
        match e {
            thermoflow::Error::Interrupted(_) => Failure::Interrupted(e.to_string()),
            e => Failure::Run(e.to_string()),
        }
    }
}

/// A usage error as two lines: `thermoflow: <what is wrong>` and a hint (clap's tip, or the
/// command's `--help`).
pub fn usage_error(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut first = lines.first().map_or("bad arguments".into(), |l| {
        l.trim_start_matches("error: ").to_string()
    });
    // "the following required arguments were not provided:" names them on the next line.
    if first.ends_with(':') {
        first = format!("{first} {}", lines.get(1).unwrap_or(&""));
    }
    let tip = lines.iter().find(|l| l.starts_with("tip:"));
    let cmd = std::env::args()
        .nth(1)
        .filter(|c| Cli::command().get_subcommands().any(|s| s.get_name() == c));
    let help = format!(
        "thermoflow {}--help",
        cmd.map_or(String::new(), |c| c + " ")
    );
    let hint = tip.map_or(format!("see `{help}`"), |t| t.to_string());
    format!("thermoflow: {first}\n  {hint}")
}

/// Fail now, before any work, when an output file could not be written: its folder must
/// exist and take a new file, and an existing file must be a writable file.
pub fn check_writable(paths: &[Option<&PathBuf>]) -> Result<(), Failure> {
    for path in paths.iter().flatten() {
        let fail = |why: String| Failure::Run(format!("cannot write {}: {why}", path.display()));
        if path.is_dir() {
            return Err(fail("it is a folder".into()));
        }
        if path.exists() {
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(|e| fail(e.to_string()))?;
            continue;
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(fail(format!("no folder {}", dir.display())));
        }
        let probe = dir.join(format!(".thermoflow-probe-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|e| fail(e.to_string()))?;
        let _ = std::fs::remove_file(probe);
    }
    Ok(())
}

/// Write `text` to `path`.
pub fn write_file(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text)
        .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))
}

/// Pretty JSON of a result.
pub fn json_text(v: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string_pretty(v).map_err(|e| Failure::Run(e.to_string()))
}

/// Write to stdout; a closed pipe (e.g. `| head`) is not an error worth a panic.
pub fn out(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// A number of seconds, or a tolerance: finite and positive.
pub fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}
