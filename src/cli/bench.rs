//! `thermoflow bench`: the engine against a stock interpreter, flow throughput with the FMA
//! peak, time to accuracy of the sweep, flow-MCMC against HMC on φ⁴. JSON on stdout.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{check_writable, json_text, out, positive, write_file, Failure};

/// Which benchmark.
#[derive(Clone, Copy, ValueEnum)]
pub enum Which {
    /// A fused MLP program against luminal's stock path.
    Engine,
    /// Sampling and training throughput of RQS coupling flows and the lattice flows (φ⁴, U(1), XY),
    /// with the FMA peak.
    Flows,
    /// Wall time of the default sweep to C_V within --cv-tol.
    Sweep,
    /// Flow-MCMC against HMC on φ⁴ (L = 8).
    Mcmc,
}

/// Arguments of `bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// The benchmark
    #[arg(value_enum)]
    which: Which,
    /// Repetitions per timing (engine; flows uses at most 30)
    #[arg(long, default_value_t = 200)]
    reps: usize,
    /// Training budget in seconds [default: the system's for sweep (5 s per modelled coordinate, 10-300; 120 for lattice fields), 240 for mcmc]
    #[arg(long, value_parser = positive)]
    train_seconds: Option<f64>,
    /// A system for the sweep benchmark, repeatable (lattice fields over [0.8, 1.25] at 8 temperatures, chains over [0.5, 2] at 8, clusters over [0.15, 0.4] at 8, others over [0.5, 3] at 32; where no exact reference exists, C_V is compared with 100 000 sweeps of parallel tempering)
    #[arg(long = "system", value_name = "NAME", default_values_t = ["double-well-2d".to_string(), "harmonic".to_string()])]
    systems: Vec<String>,
    /// Flow-MCMC steps per chain (mcmc)
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    /// Target relative standard error of C_V (sweep)
    #[arg(long, default_value_t = 0.005, value_parser = positive)]
    cv_tol: f64,
    /// Also write the results as JSON to FILE [default: not written]
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

impl BenchArgs {
    /// Run the benchmark and print its JSON.
    pub fn run(self) -> Result<(), Failure> {
        check_writable(&[self.json.as_ref()])?;
        // `--device` (global): `bench flows` then runs the flows on the device beside the CPU.
        let device = thermoflow::engine::device::selected();
        if device.is_some() && !matches!(self.which, Which::Flows) {
            return Err(Failure::Usage(
                "--device cuda|wgpu applies to `bench flows` only".into(),
            ));
        }
        let report = match (self.which, &device) {
            (Which::Engine, _) => thermoflow::bench::engine_bench(self.reps)?,
            (Which::Flows, Some(d)) => thermoflow::bench::flows_bench_gpu(d, self.reps.min(30))?,
            (Which::Flows, None) => thermoflow::bench::flows_bench(self.reps.min(30))?,
            (Which::Sweep, _) => thermoflow::bench::sweep_time_to_accuracy(
                &self.systems,
                self.cv_tol,
                self.train_seconds,
            )?,
            (Which::Mcmc, _) => {
                if self.steps < 40 {
                    return Err(Failure::Usage("--steps must be ≥ 40".into()));
                }
                let secs = self.train_seconds.unwrap_or(240.0);
                thermoflow::bench::mcmc_bench(secs, self.steps)?
            }
        };
        let text = json_text(&report)?;
        out(&format!("{text}\n"));
        if let Some(path) = &self.json {
            write_file(path, &text)?;
        }
        Ok(())
    }
}
