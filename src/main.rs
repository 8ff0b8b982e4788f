//! The `thermoflow` command line.

use std::process::ExitCode;

fn usage() -> &'static str {
    "usage: thermoflow bench engine|flows [--json] [--reps N]"
}

fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("bench") => {
            let what = args.get(1).map(String::as_str).unwrap_or("");
            let reps = args
                .iter()
                .position(|a| a == "--reps")
                .and_then(|i| args.get(i + 1))
                .map(|s| s.parse::<usize>().map_err(|_| format!("bad --reps {s:?}")))
                .transpose()?
                .unwrap_or(200);
            let json = args.iter().any(|a| a == "--json");
            let report = match what {
                "engine" => thermoflow::bench::engine_bench(reps).map_err(|e| e.to_string())?,
                "flows" => {
                    thermoflow::bench::flows_bench(reps.min(30)).map_err(|e| e.to_string())?
                }
                other => return Err(format!("unknown benchmark {other:?}; {}", usage())),
            };
            if json {
                println!("{report}");
            } else {
                println!("{}", serde_json::to_string_pretty(&report).unwrap());
            }
            Ok(())
        }
        _ => Err(usage().to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("thermoflow: {e}");
            ExitCode::FAILURE
        }
    }
}
